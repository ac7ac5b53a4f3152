"""Do guided samples show what the prompt says? One measure for every text model.

:func:`text_alignment` samples the prompts of a task (:mod:`diffgeo.data.prompts`: each prompt with the
factors it names), reads the images with the task's reader (:mod:`diffgeo.readers`) and counts,
per factor, how often the reading equals the named class (:func:`agreement_table`), with the
rate of valid images where the reader can tell. The task, its reader, sample count and default
guidance come from the model's entry in :mod:`diffgeo.models.zoo`:

- ``digits``: a classifier trained on the real UCI digits reads the digit;
- ``shapes-text``: the attribute probe reads shape and colour (and validity).

:func:`sweep` runs it over guidance scales on the same prompts and x_T (paired comparisons).
``python -m diffgeo alignment NAME`` writes ``figures/NAME_prompts.png`` (the prompt grid) and
``figures/NAME_alignment.json`` (the sweep with both DDIM variants of a clipping scheduler).

>>> import diffgeo
>>> r = text_alignment(diffgeo.load("digits"), n=20, steps=2, progress=False)
>>> r.task, r.n, r.guidance_scale, len(r.confusion["digit"]), sum(map(sum, r.confusion["digit"]))
('digits', 20, 2.0, 10, 20)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from diffgeo.data.prompts import TASKS, task_prompts
from diffgeo.models.conditioning import default_guidance
from diffgeo.models.model import Model
from diffgeo.models.zoo import ENTRIES, entry
from diffgeo.readers import get_reader
from diffgeo.sampling.generation import DEFAULT_STEPS, PromptSampler, check_prompt_model, generate, prompt_grid
from diffgeo.viz.figures import labelled_grid, save_figure

__all__ = ["Alignment", "text_alignment", "sweep", "agreement_table", "save_prompt_grid", "GUIDANCE_SWEEP"]

log = logging.getLogger(__name__)

GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 7.0)


def _fraction(hits: torch.Tensor, among: torch.Tensor) -> float:
    """count(hits) / count(among) for (n,) bool masks (hits within among); NaN when among is empty."""
    return int(hits.sum()) / int(among.sum()) if bool(among.any()) else math.nan


def agreement_table(targets: Mapping[str, torch.Tensor], read: Mapping[str, torch.Tensor],
                    named: Mapping[str, torch.Tensor], classes: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """Agreement of readings with targets, per factor of ``targets`` (each (n,) int64).

    named: factor -> (n,) bool, the prompts that name it (only those count); classes: factor ->
    class names. Returns ``agreement`` (factor -> fraction of the prompts naming it read as
    named; with several factors also ``"all"``: prompts naming all of them, all read right),
    ``per_class`` (factor -> class name -> fraction), ``named`` (factor -> count) and
    ``confusion`` (factor -> rows ``[named class][read class]`` of counts).

    >>> t = agreement_table({"digit": torch.tensor([0, 1, 1])}, {"digit": torch.tensor([0, 1, 0])},
    ...                     {"digit": torch.ones(3, dtype=torch.bool)}, {"digit": ("0", "1")})
    >>> round(t["agreement"]["digit"], 3), t["per_class"]["digit"], t["confusion"]["digit"]
    (0.667, {'0': 1.0, '1': 0.5}, ((1, 0), (1, 1)))
    """
    agreement, per_class, counts, confusion, right = {}, {}, {}, {}, {}
    for key in targets:
        names, truth, got, mask = classes[key], targets[key].long(), read[key].long(), named[key]
        right[key] = (truth == got) & mask
        counts[key] = int(mask.sum())
        agreement[key] = _fraction(right[key], mask)
        per_class[key] = {name: _fraction(right[key] & (truth == c), mask & (truth == c))
                          for c, name in enumerate(names)}
        table = torch.zeros(len(names), len(names), dtype=torch.long)
        table.index_put_((truth[mask], got[mask]), torch.ones(int(mask.sum()), dtype=torch.long), accumulate=True)
        confusion[key] = tuple(tuple(int(v) for v in row) for row in table)
    if len(targets) > 1:
        every = torch.stack([named[k] for k in targets]).all(0)
        counts["all"] = int(every.sum())
        agreement["all"] = _fraction(torch.stack([right[k] for k in targets]).all(0) & every, every)
    return {"agreement": agreement, "per_class": per_class, "named": counts, "confusion": confusion}


@dataclass(frozen=True)
class Alignment:
    """How often the reader reads what the prompts name, in n guided samples.

    task, reader: what was measured and by which reader; guidance_scale: the scale used (resolved
    from the model's default when none was given); agreement / per_class / named / confusion: see
    :func:`agreement_table`; valid_rate: fraction of valid images (None when the reader cannot
    tell); reader_accuracy: the reader's own held-out accuracy (None when not measured).
    """

    task: str
    reader: str
    guidance_scale: float
    steps: int
    n: int
    seed: int
    phrasing: str
    use_clipped_model_output: bool
    agreement: dict
    per_class: dict
    named: dict
    confusion: dict
    valid_rate: float | None
    reader_accuracy: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _task_of(model: Model | PromptSampler, task: str | None) -> str:
    task = task or entry(model).task
    if task is None:
        known = ", ".join(sorted(n for n, e in ENTRIES.items() if e.task))
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no alignment task in diffgeo.models.zoo: pass "
                         f"task= (one of {known}) to score it on that task's prompts and reader")
    if task not in ENTRIES or ENTRIES[task].task is None:
        raise ValueError(f"unknown alignment task {task!r}")
    return task


def text_alignment(model: Model | PromptSampler, n: int | None = None, *, task: str | None = None,
              guidance_scale: float | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
              phrasing: str | None = None, batch_size: int = 128, use_clipped_model_output: bool = False,
              progress: bool | None = None) -> Alignment:
    """Sample n prompts of ``task`` (default: the model's own, from :mod:`diffgeo.models.zoo`) and score
    them with the task's reader. n default: the task's ``alignment_n``; guidance_scale None: the
    model's default (for a PromptSampler, the task model's); phrasing None: the task's default
    (see :mod:`diffgeo.data.prompts`). Same seed, same prompts and x_T at every scale.

    >>> from diffgeo.data.captions import parse_caption
    >>> from diffgeo.data.shapes import render, sample_factors
    >>> class Perfect:  # draws exactly the shape and colour the prompt names
    ...     def sample_prompts(self, prompts, *, guidance_scale, steps, seed):
    ...         named = [parse_caption(p) for p in prompts]
    ...         f = sample_factors(len(prompts), seed=seed)
    ...         return render(f.replace(shape=torch.tensor([d["shape"] for d in named]),
    ...                                 colour=torch.tensor([d["colour"] for d in named])))
    >>> text_alignment(Perfect(), n=18, task="shapes-text", progress=False).agreement
    {'shape': 1.0, 'colour': 1.0, 'all': 1.0}
    """
    task = _task_of(model, task)
    spec = ENTRIES[task]
    reader = get_reader(spec.reader)
    check_prompt_model(model, reader.image_shape, "alignment")
    if guidance_scale is None:
        guidance_scale = default_guidance(model) if isinstance(model, Model) else spec.guidance
    prompts = task_prompts(task, spec.alignment_n if n is None else n, seed=seed, phrasing=phrasing)
    images = generate(model, prompts.prompts, guidance_scale=guidance_scale, steps=steps, seed=seed,
                      batch_size=batch_size, use_clipped_model_output=use_clipped_model_output, progress=progress)
    read = reader.read(images)
    table = agreement_table(prompts.targets, read, prompts.named, reader.classes)
    valid = read.get("valid")

    return Alignment(task, reader.name, float(guidance_scale), steps, len(prompts), seed,
                     phrasing or TASKS[task][1], bool(use_clipped_model_output), **table,
                     valid_rate=None if valid is None else float(valid.float().mean()),
                     reader_accuracy=reader.accuracy)


def sweep(model: Model | PromptSampler, scales: Sequence[float] = GUIDANCE_SWEEP, **kwargs: Any) -> list[Alignment]:
    """:func:`text_alignment` at each guidance scale, same prompts and x_T (keywords passed on).

    >>> import diffgeo
    >>> [r.guidance_scale for r in sweep(diffgeo.load("digits"), (1, 3), n=10, steps=2, progress=False)]
    [1.0, 3.0]
    """
    return [text_alignment(model, guidance_scale=float(w), **kwargs) for w in scales]


def save_prompt_grid(model: Model, path: str | Path, *, prompts: Sequence[str] | None = None, columns: int = 8,
                     guidance_scale: float | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
                     progress: bool | None = None) -> Path:
    """Draw :func:`~diffgeo.sampling.generation.prompt_grid` (prompts default: the model's in :mod:`diffgeo.models.zoo`)
    and save it as a PNG, each row labelled by its prompt. With the default prompts, images the
    model's reader reads as another class than the prompt names get a red frame.

    >>> import diffgeo, tempfile, pathlib
    >>> p = save_prompt_grid(diffgeo.load("digits"), pathlib.Path(tempfile.mkdtemp()) / "g.png", columns=2,
    ...                      steps=2, progress=False)
    >>> p.stat().st_size > 0
    True
    """

    spec = entry(model)
    if prompts is None:
        if spec.prompts is None:
            raise ValueError(f"{model.name} has no default prompts in diffgeo.models.zoo: pass prompts=[...]")
        prompts = spec.prompts()
    prompts = list(prompts)
    w = default_guidance(model) if guidance_scale is None else float(guidance_scale)
    images = prompt_grid(model, prompts, columns=columns, guidance_scale=w, steps=steps, seed=seed, progress=progress)
    title = f"{model.name}: guidance {w:g}, {steps} DDIM steps, seed {seed}"
    marks = None
    if spec.task is not None and spec.reader is not None:
        expected = task_prompts(spec.task, len(prompts), phrasing="canonical")
        if expected.prompts == prompts:
            read = get_reader(spec.reader).read(images)
            wrong = torch.zeros(len(images), dtype=torch.bool)
            for key, target in expected.targets.items():
                wrong |= read[key] != target.repeat_interleave(columns)
            marks = wrong.tolist()
            title += f"\n(red = the {spec.reader} reader reads another {' or '.join(expected.targets)})"
    return save_figure(labelled_grid(images, prompts, nrow=columns, title=title, marks=marks), path)


# -- command line ------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
