"""Sample quality of a shapes model, measured with the attribute probe.

``python -m diffgeo.evaluate`` draws 512 samples from the embedded ``shapes`` model and writes
``figures/shapes_quality.png`` (factor histograms, generated vs training distribution) and
``figures/shapes_quality.json``.

>>> import diffgeo
>>> report = evaluate_samples(diffgeo.load("shapes"), n=8, steps=5, progress=False)
>>> sorted(report.class_frequencies)
['colour', 'shape']
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data.shapes import COLOURS, CONTINUOUS, RANGES, SHAPES, sample_factors
from .io import atomic_path
from .models import Model, load
from .probe import validity
from .sampling import sample

__all__ = ["QualityReport", "evaluate_samples", "ks_statistic"]

log = logging.getLogger(__name__)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs.

    >>> round(ks_statistic(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])), 3)
    0.0
    """
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


@dataclass(frozen=True)
class QualityReport:
    """valid_rate over n samples; class frequencies (generated, among valid samples) per class
    factor; total-variation distance of each class distribution to uniform (the training
    distribution); KS statistic of each continuous factor against the training distribution."""

    n: int
    steps: int
    seed: int
    valid_rate: float
    class_frequencies: dict
    class_tv: dict
    continuous_ks: dict
    continuous_values: dict

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("continuous_values")
        return out


def evaluate_samples(model: Model, *, n: int = 512, steps: int = 50, seed: int = 1234, batch_size: int = 128,
                     progress: bool = True) -> QualityReport:
    """Sample n images and score them with the probe against the known training distribution."""
    images = []
    with torch.no_grad():
        for i, start in enumerate(range(0, n, batch_size)):
            m = min(batch_size, n - start)
            images.append(sample(model, m, steps=steps, seed=seed + i, progress=progress).result.cpu())
    val = validity(torch.cat(images))
    f = val.factors[val.valid] if bool(val.valid.any()) else val.factors
    ref = sample_factors(20000, seed=777)
    freqs, tv = {}, {}
    for name, labels in (("shape", SHAPES), ("colour", COLOURS)):
        counts = torch.bincount(getattr(f, name), minlength=len(labels)).double()
        p = counts / counts.sum()
        freqs[name] = {lab: round(float(v), 4) for lab, v in zip(labels, p)}
        tv[name] = round(float(0.5 * (p - 1 / len(labels)).abs().sum()), 4)
    ks = {name: round(ks_statistic(getattr(f, name).double(), getattr(ref, name).double()), 4) for name in CONTINUOUS}
    values = {name: getattr(f, name).tolist() for name in CONTINUOUS}
    return QualityReport(n, steps, seed, val.rate, freqs, tv, ks, values)


def plot_report(report: QualityReport, path: str | Path) -> Path:
    """Histograms of the generated factors (valid samples) against the training distribution."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 6, figsize=(16, 2.8))
    for ax, name, labels in ((axes[0], "shape", SHAPES), (axes[1], "colour", COLOURS)):
        ax.bar(range(len(labels)), list(report.class_frequencies[name].values()), color="C0", label="generated")
        ax.axhline(1 / len(labels), color="k", ls="--", lw=1, label="training")
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        ax.set_title(f"{name} (TV {report.class_tv[name]:.3f})", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, name in zip(axes[2:], CONTINUOUS):
        lo, hi = RANGES[name]
        ax.hist(report.continuous_values[name], bins=20, range=(lo, hi), density=True, color="C0")
        ax.axhline(1 / (hi - lo), color="k", ls="--", lw=1)
        ax.set_title(f"{name} (KS {report.continuous_ks[name]:.3f})", fontsize=9)
    fig.suptitle(f"{report.n} samples, {report.steps} DDIM steps: {report.valid_rate:.1%} valid; "
                 "factors of the valid ones read by the probe vs the training distribution (dashed)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffgeo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = evaluate_samples(load(args.model), n=args.n, steps=args.steps)
    plot_report(report, args.out / f"{args.model}_quality.png")
    with atomic_path(args.out / f"{args.model}_quality.json") as tmp:
        tmp.write_text(json.dumps(report.summary(), indent=1))
    log.info("%s", json.dumps(report.summary()))


if __name__ == "__main__":
    main()
