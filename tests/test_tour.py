"""`python -m diffgeo tour`: figures written, numbers equal an independent computation."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest
import torch

import diffgeo
from diffgeo.models.hooks import capture
from diffgeo.readers.probe import validity
from diffgeo.models.zoo import entry


def test_tour_writes_figures_with_correct_h_statistics(tour_run, shapes_model):
    out, summary = tour_run  # `python -m diffgeo tour --n 4 --steps 4 --seed 4`
    n = summary["n"]
    assert (n, summary["steps"], summary["seed"]) == (4, 4, 4)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tour_h_statistics.png", "tour_prompts_digits.png", "tour_prompts_shapes-text.png",
                     "tour_samples.png", "tour_summary.json"]
    assert summary["h_shape"] == [128, 8, 8] and summary["x_shape"] == [3, 32, 32]
    for name in ("tour_samples.png", "tour_h_statistics.png"):
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.std() > 0.01  # a real picture, not blank
    # Independent reference: the same trajectory, h captured in full forward passes.
    with torch.no_grad():
        traj = diffgeo.sample(shapes_model, n, steps=4, seed=4, progress=False)
        norms, cosines = [], []
        for x, t in zip(traj.xs[:-1], traj.timesteps[:-1]):
            with capture(shapes_model.unet) as cap:
                shapes_model.unet(x, t.expand(n))
            h = cap.value.flatten(1).double()
            norms.append(h.norm(dim=1).mean().item())
            u = torch.nn.functional.normalize(h, dim=1)
            cosines.append(((u @ u.T).sum() - n) / (n * (n - 1)))  # mean over pairs of distinct samples
    # the valid rate is the probe's verdict on the same samples
    assert summary["valid_rate"] == pytest.approx(validity(traj.result).rate)
    stats = summary["h_statistics"]
    assert stats["timesteps"] == traj.timesteps[:-1].tolist()
    assert torch.allclose(torch.tensor(stats["mean_norm"], dtype=torch.float64), torch.tensor(norms, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(torch.tensor(stats["cross_sample_cosine"], dtype=torch.float64), torch.stack(cosines), atol=1e-5)


def test_tour_draws_a_prompt_grid_per_text_model(tour_run):
    out, summary = tour_run
    assert sorted(summary["prompt_grids"]) == ["digits", "shapes-text"]
    for name in ("digits", "shapes-text"):
        grid = summary["prompt_grids"][name]
        assert grid["guidance_scale"] == entry(name).guidance and grid["prompts"] == entry(name).prompts()
        img = mpimg.imread(out / f"tour_prompts_{name}.png")
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0.05
