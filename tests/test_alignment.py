"""Measured text alignment: the digit reader against sklearn's own data and split, the inverse of
the digits preprocessing against the raw 8x8 images, the trained ``digits`` model's agreement
with its prompts, and the agreement logic on stand-in models whose right answer is known."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import diffgeo
import diffgeo.cli.alignment as alignment_cli
from diffgeo.evaluation.alignment import text_alignment
from diffgeo.sampling.generation import DEFAULT_STEPS, prompt_grid
from diffgeo.data.prompts import shapes_prompts
from diffgeo.readers.digits import digit_classifier, to_classifier_input
from diffgeo.models.zoo import entry
from diffgeo.data.captions import parse_caption
from diffgeo.data.digits import load_digits_images
from diffgeo.data.shapes import render, sample_factors

# The guidance scale was chosen from the sweep of ``python -m diffgeo alignment digits`` (seed 0);
# the acceptance test draws other prompts and noise.
ACCEPTANCE_SEED = 2026
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_agreement(model, **kwargs):
    """text_alignment on the digits task: overall = agreement["digit"], per digit, confusion."""
    r = text_alignment(model, task="digits", **kwargs)
    return r, r.agreement["digit"], list(r.per_class["digit"].values()), torch.tensor(r.confusion["digit"])


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="module")
def split(sk_digits):
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(sk_digits.target)), test_size=0.25, stratify=sk_digits.target,
                            random_state=0)


# -- the reader ---------------------------------------------------------------------------------------
def test_classifier_reads_held_out_real_digits(sk_digits, split):
    clf = digit_classifier()
    train_idx, test_idx = split
    assert (clf.n_train, clf.n_test) == (len(train_idx), len(test_idx)) == (1347, 450)
    # fitted on the training split: its support vectors are training digits
    train_rows = {row.tobytes() for row in sk_digits.data[train_idx]}
    assert all(sv.tobytes() in train_rows for sv in clf.estimator.support_vectors_)
    # accuracy recomputed from the raw held-out features and labels
    acc = float((clf.estimator.predict(sk_digits.data[test_idx]) == sk_digits.target[test_idx]).mean())
    assert acc == pytest.approx(clf.accuracy) and acc >= 0.95
    # the image path (16x16 in [-1, 1] -> inverse -> classifier) reads the upsampled held-out digits alike
    images = load_digits_images().images[torch.as_tensor(test_idx)]
    read = clf.predict(images).numpy()
    assert (read == sk_digits.target[test_idx]).mean() == pytest.approx(acc)


def test_inverse_recovers_the_original_8x8_digits(sk_digits):
    """Exact to float precision: pooling + de-blurring inverts the bilinear upsampling. Plain 2x2
    pooling alone is off by up to 6 grey levels (it blurs by 1/8, 3/4, 1/8 per axis)."""
    up = load_digits_images().images
    np.testing.assert_allclose(to_classifier_input(up), sk_digits.data, atol=1e-4)
    plain = ((F.avg_pool2d(up.double(), 2) + 1) * 8).reshape(len(up), 64).numpy()
    assert np.abs(plain - sk_digits.data).max() > 4
    # any 8x8 image in [0, 16], not only the data set's: upsample independently, invert
    g = torch.Generator().manual_seed(0)
    x8 = torch.rand(20, 1, 8, 8, generator=g, dtype=torch.float64) * 16
    x16 = F.interpolate(x8 / 8 - 1, scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(to_classifier_input(x16), x8.reshape(20, 64).numpy(), atol=1e-9)
    # saturated images clip to sklearn's range
    ends = to_classifier_input(torch.stack([torch.full((1, 16, 16), -1.5), torch.full((1, 16, 16), 1.5)]))
    assert (ends[0] == 0).all() and (ends[1] == 16).all()
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\)"):
        to_classifier_input(torch.zeros(2, 1, 8, 8))


# -- digits: the trained model ------------------------------------------------------------------------
def test_trained_digits_model_draws_the_prompted_digit():
    """Issue 4: a classifier trained on the real digits agrees with the prompted digit in at least
    80% of the guided samples."""
    from diffgeo.training import get_recipe

    model = diffgeo.load("digits", device="cpu")
    assert model.provenance["steps"] == get_recipe("digits").steps, "not the final digits model"
    # n=50 (5 per digit): measured 1.000 at the default guidance 2.0 (500 samples, seed 0); the 95%
    # Wilson CI at 50/50 is [0.929, 1] and at 48/50 [0.865, 0.989], both above the 0.80 bound.
    n = 50
    r, overall, per_digit, conf = digit_agreement(model, n=n, guidance_scale=entry("digits").guidance,
                                                  steps=DEFAULT_STEPS, seed=ACCEPTANCE_SEED, progress=False)
    assert conf.sum() == n and (conf.sum(1) == n // 10).all()  # balanced prompts
    assert overall == pytest.approx(float(conf.trace()) / n)
    assert overall >= 0.80, f"digit agreement {overall:.3f} (per digit {per_digit})"


def test_strong_guidance_keeps_the_prompted_digit_with_clipped_eps():
    """At guidance 7 the raw guided eps in DDIM's direction term fights the clipped x0 (measured
    0.046 on 500 samples, seed 0); eps recomputed from the clipped x0 keeps the digit (1.000)."""
    model = diffgeo.load("digits", device="cpu")
    # n=40 each: measured 1.000 (clipped) and 0.046 (raw) on 500 samples; 95% Wilson CIs at n=40 are
    # [0.912, 1] at 40/40 and [0.014, 0.165] at 2/40, both far from the 0.80 bound between them.
    kw = dict(n=40, guidance_scale=7.0, steps=DEFAULT_STEPS, seed=ACCEPTANCE_SEED, progress=False)
    clipped, clipped_overall, _, _ = digit_agreement(model, use_clipped_model_output=True, **kw)
    raw, raw_overall, _, _ = digit_agreement(model, **kw)
    assert clipped.use_clipped_model_output and not raw.use_clipped_model_output
    assert clipped_overall >= 0.80 > raw_overall, (clipped_overall, raw_overall)


# -- digits: the logic, on stand-ins --------------------------------------------------------------------
def _prompted_digit(prompt: str) -> int:
    last = prompt.split()[-1]
    return int(last) if last.isdigit() else WORDS.index(last)


class RealDigits:
    """Draws a held-out real digit (upsampled) of the prompted class, shifted by ``offset``."""

    def __init__(self, test_idx, offset: int = 0):
        data = load_digits_images()
        self.images, self.labels, self.idx, self.offset = data.images, data.labels, test_idx, offset

    def sample_prompts(self, prompts, *, guidance_scale, steps, seed):
        g = np.random.default_rng(seed)
        out = []
        for p in prompts:
            d = (_prompted_digit(p) + self.offset) % 10
            pool = [i for i in self.idx if int(self.labels[i]) == d]
            out.append(self.images[pool[g.integers(len(pool))]])
        return torch.stack(out)


def test_digit_agreement_logic_on_real_digits(split):
    _, test_idx = split
    _, overall, per_digit, conf = digit_agreement(RealDigits(test_idx), n=200, seed=3, progress=False)
    assert overall >= 0.95 and min(per_digit) >= 0.8
    assert per_digit == pytest.approx([float(conf[d, d]) / 20 for d in range(10)])
    _, overall, _, conf = digit_agreement(RealDigits(test_idx, offset=1), n=200, seed=3, progress=False)
    assert overall <= 0.05
    assert sum(int(conf[d, (d + 1) % 10]) for d in range(10)) >= 190  # read as the digit actually drawn


def test_digit_agreement_refuses_other_models(shapes_model):
    with pytest.raises(ValueError, match="text-conditioned"):
        digit_agreement(shapes_model, n=2)
    with pytest.raises(TypeError, match="sample_prompts"):
        digit_agreement(object(), n=2)


# -- shapes-text: the trained model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_text():
    from diffgeo.training import get_recipe

    model = diffgeo.load("shapes-text", device="cpu")
    # the shipped model is the recipe's run plus a v-prediction fine-tune (its provenance)
    assert model.provenance["steps"] > get_recipe("shapes-text").steps, "not the final shapes-text model"
    assert model.scheduler.config.prediction_type == "v_prediction"
    return model


def binomial_floor(p: float, n: int, z: float = 2.33) -> float:
    """One-sided 99% (z = 2.33) floor of a measured rate: a model whose true rate is p measures at
    least this with probability ~0.99 (normal approximation of the binomial)."""
    return p - z * (p * (1 - p) / n) ** 0.5


#: The issue's targets for shapes-text at its default guidance.
SHAPES_TEXT_TARGET = {"valid": 0.90, "named": 0.95, "paraphrase": 0.90}


def test_trained_shapes_text_model_draws_valid_scenes_of_the_named_shape_and_colour(shapes_text):
    """At the default guidance, >= 90% of the samples are valid scenes and the attribute probe reads
    the named shape and colour in >= 95% of them (issue 11's targets)."""
    # n = 108: each of the 18 shape-colour prompts 6 times. Floors (binomial_floor): 0.901 for the
    # named factors (p = 0.95) and 0.833 for validity (p = 0.90); a model meeting the targets passes
    # each with probability ~0.99; one reading a factor right in 85% fails with probability ~0.93,
    # one with 80% valid scenes with ~0.81 (the 3,000-step epsilon model, 69% valid, with ~1).
    # Measured (python -m diffgeo alignment shapes-text --n 128, seed 0): shape 0.992, colour 1.000,
    # valid 0.977 (the 3,000-step epsilon model before its v-prediction fine-tune: 0.965, 0.996, 0.69).
    n = 108
    r = text_alignment(shapes_text, n=n, steps=DEFAULT_STEPS, seed=ACCEPTANCE_SEED, progress=False)
    assert r.guidance_scale == entry("shapes-text").guidance
    assert r.named == {"shape": n, "colour": n, "all": n}
    floor = binomial_floor(SHAPES_TEXT_TARGET["named"], n)
    assert r.agreement["shape"] >= floor and r.agreement["colour"] >= floor, (r.agreement, floor)
    assert r.valid_rate >= binomial_floor(SHAPES_TEXT_TARGET["valid"], n), r.valid_rate


def test_shapes_text_understands_paraphrases_and_partial_captions(shapes_text):
    """Training phrasings ("a small crimson disk on the left", "a square"): each named factor is
    drawn as named in >= 90% (the target); a prompt-blind model would score about 1/3 (shape) and
    1/6 (colour)."""
    # n = 64: about 53 name each factor, so the floor is binomial_floor(0.90, ~53) ~ 0.80.
    # Measured (the same run, n = 128): shape 0.972, colour 1.000, valid 0.906.
    n = 64
    r = text_alignment(shapes_text, n=n, steps=DEFAULT_STEPS, seed=ACCEPTANCE_SEED, phrasing="captions",
                       progress=False)
    assert 0 < r.named["shape"] < n and 0 < r.named["colour"] < n
    for factor in ("shape", "colour"):
        floor = binomial_floor(SHAPES_TEXT_TARGET["paraphrase"], r.named[factor])
        assert r.agreement[factor] >= floor, (factor, r.agreement, r.named, floor)


# -- shapes-text: the logic, on stand-ins ----------------------------------------------------------------
class Renderer:
    """Renders each prompt's named shape and colour (random where unnamed, colour shifted by
    ``colour_shift``; ``fixed`` renders that (shape, colour) whatever the prompt)."""

    def __init__(self, colour_shift: int = 0, fixed: tuple[int, int] | None = None):
        self.colour_shift, self.fixed = colour_shift, fixed

    def sample_prompts(self, prompts, *, guidance_scale, steps, seed):
        f = sample_factors(len(prompts), seed=seed + 1)
        named = [parse_caption(p) for p in prompts]
        shape = [self.fixed[0] if self.fixed else (d["shape"] if d["shape"] is not None else int(s))
                 for d, s in zip(named, f.shape)]
        colour = [self.fixed[1] if self.fixed else ((d["colour"] + self.colour_shift) % 6 if d["colour"] is not None
                                                    else int(c)) for d, c in zip(named, f.colour)]
        return render(f.replace(shape=torch.tensor(shape), colour=torch.tensor(colour)))


def test_text_alignment_is_one_for_exact_renderings():
    r = text_alignment(Renderer(), n=256, task="shapes-text", progress=False)
    assert r.agreement == {"shape": 1.0, "colour": 1.0, "all": 1.0}
    assert r.named == {"shape": 256, "colour": 256, "all": 256} and r.valid_rate >= 0.98
    assert all(v == 1.0 for per in r.per_class.values() for v in per.values())


def test_text_alignment_is_zero_for_the_wrong_colour():
    r = text_alignment(Renderer(colour_shift=1), n=256, task="shapes-text", progress=False)
    assert r.agreement == {"shape": 1.0, "colour": 0.0, "all": 0.0}
    assert all(v == 0.0 for v in r.per_class["colour"].values())


def test_text_alignment_counts_a_prompt_blind_model_against_the_prompts():
    """A model that always draws a red circle agrees exactly as often as the prompts ask for one."""
    prompts = shapes_prompts(256, seed=0).prompts
    r = text_alignment(Renderer(fixed=(0, 0)), n=256, seed=0, task="shapes-text", progress=False)
    assert r.agreement["shape"] == pytest.approx(sum("circle" in p for p in prompts) / 256)
    assert r.agreement["colour"] == pytest.approx(sum(p.startswith("a red ") for p in prompts) / 256)
    assert r.agreement["all"] == pytest.approx(sum(p == "a red circle" for p in prompts) / 256)
    assert 0.3 < r.agreement["shape"] < 0.37 and 0.15 < r.agreement["colour"] < 0.19


def test_text_alignment_with_varied_captions_counts_named_factors_only():
    prompts = shapes_prompts(256, seed=7, phrasing="captions").prompts
    r = text_alignment(Renderer(colour_shift=2), n=256, seed=7, phrasing="captions", task="shapes-text",
                       progress=False)
    named = [parse_caption(p) for p in prompts]
    assert r.named["shape"] == sum(d["shape"] is not None for d in named) < 256
    assert r.named["colour"] == sum(d["colour"] is not None for d in named) < 256
    assert r.agreement["shape"] == 1.0 and r.agreement["colour"] == 0.0


# -- figures ---------------------------------------------------------------------------------------------------
def test_prompt_grid_rows_share_noise_and_cli_writes_figures(tmp_path):
    model = diffgeo.load("digits", device="cpu")
    same = prompt_grid(model, ["a 4", "a 4"], columns=3, steps=3, progress=False)
    torch.testing.assert_close(same[:3], same[3:])  # same prompt, same x_T per column
    differ = prompt_grid(model, ["a 4", "a 0"], columns=3, steps=3, progress=False)
    assert (differ[:3] - differ[3:]).abs().max() > 0.1
    alignment_cli.main(["digits", "--n", "10", "--scales", "1", "3", "--steps", "3", "--columns", "2", "--out",
                    str(tmp_path), "--no-progress"])
    summary = json.loads((tmp_path / "digits_alignment.json").read_text())
    # the runs asked for, in order, each with the requested n and steps
    assert [(r["guidance_scale"], r["use_clipped_model_output"], r["phrasing"]) for r in summary["results"]] == [
        (1.0, False, "captions"), (3.0, False, "captions"), (1.0, True, "captions"), (3.0, True, "captions"),
        (entry("digits").guidance, False, "canonical")]
    for r in summary["results"]:
        conf = torch.tensor(r["confusion"]["digit"])
        assert (r["n"], r["steps"]) == (10, 3) and conf.sum() == 10 and (conf.sum(1) == 1).all()  # one per digit
        # the reported numbers follow from the confusion matrix (row = prompted digit, column = read)
        assert r["agreement"]["digit"] == pytest.approx(float(conf.trace()) / 10)
        assert list(r["per_class"]["digit"].values()) == pytest.approx(conf.diagonal().double().tolist())
    assert summary["reader"]["held_out_accuracy"] >= 0.95
    img = mpimg.imread(tmp_path / "digits_prompts.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0.05


def test_shapes_text_cli_writes_the_sweep_and_the_paraphrase_run(tmp_path, shapes_text):
    alignment_cli.main(["shapes-text", "--n", "6", "--scales", "2", "--steps", "2", "--columns", "1", "--out",
                    str(tmp_path), "--no-progress"])
    summary = json.loads((tmp_path / "shapes-text_alignment.json").read_text())
    runs = [(r["guidance_scale"], r["use_clipped_model_output"], r["phrasing"]) for r in summary["results"]]
    w = entry("shapes-text").guidance
    assert runs == [(2.0, False, "canonical"), (2.0, True, "canonical"), (w, False, "captions")]
    # the paraphrase run counts what its prompts name, read back from the words alone
    named = [parse_caption(p) for p in shapes_prompts(6, seed=0, phrasing="captions").prompts]
    for key in ("shape", "colour"):
        assert summary["results"][2]["named"][key] == sum(d[key] is not None for d in named)
    assert all(r["named"]["shape"] == r["named"]["colour"] == 6 for r in summary["results"][:2])
    img = mpimg.imread(tmp_path / "shapes-text_prompts.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0.05

