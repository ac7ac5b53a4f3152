"""Bad input never passes silently (issue 10): non-finite values, argument types, model folders.

Tests marked "wrong at the start" returned a silent wrong result before issue 10; the others
check that an unclear error became one message naming the argument (or the file).
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

import diffgeo
import diffgeo.models.hooks as hooks
from diffgeo.core.checks import NonFiniteError
from diffgeo.models.conditioning import Cond
from conftest import save_unet_folder, tiny_unet_config

X = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def digits():
    return diffgeo.load("digits", device="cpu")


def _x(seed: int = 0, shape=X) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# -- non-finite values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_eta_is_refused(shapes_model, eta):  # wrong at the start (nan ran as 0, inf gave NaN images)
    with pytest.raises(ValueError, match=f"eta must be a non-negative finite number, got {eta}"):
        diffgeo.sample(shapes_model, 1, steps=2, eta=eta, seed=0, progress=False)
    with pytest.raises(ValueError, match="eta must be a non-negative finite number"):
        diffgeo.denoise(shapes_model, _x(), 500, steps=2, eta=eta, progress=False)


def test_a_blow_up_is_reported_with_its_step_and_t(shapes_model):  # wrong at the start (NaN images returned)
    # eta = 1e30 is finite, so it passes the argument check; the first stochastic step then adds
    # sigma * z with sigma ~ 1e30 * O(1): the state leaves any sane range at step 0 (t=500 -> 0).
    with pytest.raises(NonFiniteError, match=r"blew up at step 0 \(t=500 -> 0\).*eta=1e\+30"):
        diffgeo.sample(shapes_model, 1, steps=2, eta=1e30, seed=0, progress=False)


def test_infinite_guidance_is_refused_and_huge_guidance_is_caught(digits):  # wrong at the start
    x = _x(0, (1, 1, 16, 16))
    with pytest.raises(ValueError, match="guidance_scale must be a finite number, got inf"):
        diffgeo.sample(digits, noise=x, prompt="a 3", guidance_scale=float("inf"), steps=2, progress=False)
    # the raw eps blows up; with digits' default (eps recomputed from the clipped x0) the step stays bounded
    with pytest.raises(NonFiniteError, match=r"step 0 \(t=500 -> 0\).*guidance_scale=1e\+30"):
        diffgeo.sample(digits, noise=x, prompt="a 3", guidance_scale=1e30, steps=2, use_clipped_model_output=False,
                       progress=False)


def test_a_cond_holding_nan_is_refused(digits):  # wrong at the start (NaN eps)
    e = digits.encode_prompt(["a 3"])
    bad = e.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="cond contains NaN or infinite values"):
        digits.eps(_x(0, (1, 1, 16, 16)), 500, cond={"encoder_hidden_states": bad})
    with pytest.raises(ValueError, match="uncond contains NaN"):
        Cond(cond=e, uncond=bad, branch="cfg", guidance_scale=2.0)


def test_conditioning_of_the_wrong_width_or_dtype_is_named(digits):
    x = _x(0, (1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"cond has token embeddings of width 100 .* takes width 384"):
        digits.eps(x, 500, cond=Cond(cond=torch.zeros(1, 16, 100)))
    with pytest.raises(TypeError, match=r"cond has dtype torch.float64 but digits runs in torch.float32"):
        digits.eps(x, 500, cond=Cond(cond=torch.zeros(1, 16, 384, dtype=torch.float64)))


def test_a_basis_with_nan_has_no_principal_angles():  # wrong at the start (angles 0)
    a = torch.eye(4)[:2].clone()
    a[0, 3] = float("nan")
    with pytest.raises(ValueError, match="a contains NaN or infinite values"):
        diffgeo.principal_angles(a, torch.eye(4)[:2])
    with pytest.raises(ValueError, match=r"bases\[1\] contains NaN"):
        diffgeo.distance_matrix([torch.eye(4)[:2], a])
    with pytest.raises(TypeError, match="b must be real"):
        diffgeo.grassmann_distance(torch.eye(4)[:2], torch.eye(4, dtype=torch.complex64)[:2])
    with pytest.raises(ValueError, match="dimension 4 vs 3"):
        diffgeo.projection_distance(torch.eye(4)[:2], torch.eye(3)[:2])
    with pytest.raises(ValueError, match="v contains NaN"):
        diffgeo.spectral_centroid(torch.full((1, 8, 8), float("nan")))


# -- types taken silently ------------------------------------------------------------------------------
def test_dtype_given_by_name_is_honoured(tiny_folder):  # wrong at the start (loaded float32)
    assert diffgeo.load(tiny_folder, device="cpu", dtype="float16").dtype == torch.float16
    assert diffgeo.load(tiny_folder, device="cpu", dtype="torch.bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype or one of its names"):
        diffgeo.load("shapes", dtype="int8")
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        diffgeo.load("shapes", dtype=16)


def test_use_clipped_model_output_must_be_a_bool(shapes_model):  # wrong at the start ("no" counted as True)
    for bad in ("no", 0, 1.0):  # None is allowed: the model's default (model.clipped_eps)
        with pytest.raises(TypeError, match="use_clipped_model_output must be True or False"):
            diffgeo.sample(shapes_model, 1, steps=2, seed=0, use_clipped_model_output=bad, progress=False)


def test_an_empty_h_module_is_refused():  # wrong at the start (h() returned the whole U-Net output)
    with pytest.raises(ValueError, match="h_module must be a non-empty string, got ''"):
        diffgeo.load("shapes", h_module="")
    with pytest.raises(TypeError, match="h_module must be a string"):
        diffgeo.load("shapes", h_module=None)


def test_seed_and_generator_together_are_refused(shapes_model):  # wrong at the start (recorded seed 7)
    with pytest.raises(ValueError, match="give seed= or generator=, not both"):
        diffgeo.sample(shapes_model, 1, steps=2, seed=7, generator=torch.Generator().manual_seed(1), progress=False)


def test_the_drawn_seed_is_recorded_and_repeats_the_run(shapes_model):
    with torch.no_grad():
        first = diffgeo.sample(shapes_model, 1, steps=2, progress=False)
        seed = first.meta["seed"]
        assert isinstance(seed, int)
        again = diffgeo.sample(shapes_model, 1, steps=2, seed=seed, progress=False)
    assert torch.equal(first.result, again.result)


def test_prompt_grid_takes_one_string_as_one_prompt(digits):  # wrong at the start (one row per character)
    from diffgeo.sampling.generation import prompt_grid

    images = prompt_grid(digits, "a 1", columns=2, steps=2, progress=False)
    assert images.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="prompts is empty"):
        prompt_grid(digits, [], columns=2, steps=2, progress=False)
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings"):
        prompt_grid(digits, [1, 2], columns=2, steps=2, progress=False)


# -- unclear before: one message naming the argument ------------------------------------------------------
def test_numpy_integers_are_integers_and_bools_are_not(shapes_model):
    with torch.no_grad():
        a = diffgeo.sample(shapes_model, np.int64(1), steps=np.int32(2), seed=np.uint8(3), progress=False)
        b = diffgeo.sample(shapes_model, 1, steps=2, seed=3, progress=False)
    assert torch.equal(a.result, b.result) and a.meta["seed"] == 3 and type(a.meta["steps"]) is int
    with pytest.raises(TypeError, match="n must be an integer, got bool True"):
        diffgeo.sample(shapes_model, True, steps=2, progress=False)
    with pytest.raises(TypeError, match="steps must be an integer, got bool True"):
        diffgeo.sample(shapes_model, 1, steps=True, progress=False)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed=-1), ValueError, "seed must be a non-negative integer"),
    (dict(seed=2**64), ValueError, "seed must be <= "),
    (dict(seed="7"), TypeError, "seed must be an integer"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(generator="g"), TypeError, "generator must be a torch.Generator"),
])
def test_bad_seeds_and_generators_are_named(shapes_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        diffgeo.sample(shapes_model, 1, steps=2, progress=False, **kwargs)


@pytest.mark.parametrize("t, error, match", [
    ("500", TypeError, "t must be an integer scheduler timestep"),
    (None, TypeError, "t must be an integer scheduler timestep"),
    (500.0, TypeError, "t must be an integer scheduler timestep"),
    (True, TypeError, "t must be an integer scheduler timestep"),
    (torch.tensor([], dtype=torch.long), ValueError, "t is empty"),
    (1000, ValueError, "outside the schedule"),
])
def test_bad_timesteps_are_named(shapes_model, t, error, match):
    with pytest.raises(error, match=match):
        shapes_model.h(_x(), t)


def test_empty_batches_and_meta_tensors_are_refused(shapes_model):
    with pytest.raises(ValueError, match=r"x_t is empty \(shape \(0, 3, 32, 32\)\)"):
        shapes_model.eps(torch.zeros(0, 3, 32, 32), 500)
    with pytest.raises(ValueError, match="x_t is on the meta device"):
        shapes_model.eps(torch.zeros(X, device="meta"), 500)
    with pytest.raises(ValueError, match="noise is empty"):
        diffgeo.sample(shapes_model, noise=torch.zeros(0, 3, 32, 32), steps=2, progress=False)


def test_hooks_take_the_unet_and_check_the_delta(shapes_model):
    unet = shapes_model.unet
    with pytest.raises(TypeError, match="pass model.unet"):
        with hooks.add_to_output(shapes_model, torch.zeros(1)):
            pass
    with pytest.raises(ValueError, match=r"delta has shape \(3, 7\), which does not broadcast to the output"):
        with torch.no_grad(), hooks.add_to_output(unet, torch.zeros(3, 7)):
            shapes_model.eps(_x(), 500)
    with pytest.raises(TypeError, match="delta has dtype torch.float64"):
        with torch.no_grad(), hooks.add_to_output(unet, torch.zeros(1, 128, 8, 8, dtype=torch.float64)):
            shapes_model.eps(_x(), 500)
    with pytest.raises(ValueError, match="delta contains NaN"):
        with hooks.add_to_output(unet, torch.full((1, 128, 8, 8), float("nan"))):
            pass
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        with hooks.capture(unet, ""):
            pass
    assert all(not m._forward_hooks for m in unet.modules())  # every failed hook was removed


def test_a_negative_prompt_unused_at_guidance_one_warns(digits, caplog):
    with caplog.at_level(logging.WARNING, logger="diffgeo"), torch.no_grad():
        diffgeo.sample(digits, noise=_x(0, (1, 1, 16, 16)), prompt="a 3", negative_prompt="a 5", guidance_scale=1.0,
                       steps=2, progress=False)
    assert any("negative_prompt='a 5' is unused" in r.getMessage() for r in caplog.records)


def test_loading_prints_no_float32_noise(capfd, tiny_folder):
    diffgeo.load(tiny_folder, device="cpu")
    diffgeo.load(tiny_folder, device="cpu", dtype=torch.float32)
    assert "should be kept in float32" not in capfd.readouterr().err


# -- model folders -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return save_unet_folder(tmp_path_factory.mktemp("tiny"), UNet2DModel(**tiny_unet_config()))


def _broken(tmp_path, tiny_folder, name):
    folder = tmp_path / name
    shutil.copytree(tiny_folder, folder)
    return folder


def test_a_config_that_is_a_list_is_named(tmp_path, tiny_folder):
    folder = _broken(tmp_path, tiny_folder, "listcfg")
    (folder / "unet" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"listcfg/unet/config.json holds a JSON list, not an object"):
        diffgeo.load(folder)
    (folder / "unet" / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"listcfg/unet/config.json is not valid JSON"):
        diffgeo.load(folder)


def test_truncated_and_foreign_weights_are_named(tmp_path, tiny_folder):
    from diffusers import UNet2DModel

    folder = _broken(tmp_path, tiny_folder, "trunc")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot load the U-Net weights .*trunc/unet/diffusion_pytorch_model"
                                         r".safetensors: the file is truncated"):
        diffgeo.load(folder)
    other = save_unet_folder(tmp_path / "other", UNet2DModel(**tiny_unet_config(in_channels=1, out_channels=1)))
    folder = _broken(tmp_path, tiny_folder, "foreign")
    shutil.copy(other / "unet" / "diffusion_pytorch_model.safetensors", folder / "unet")
    with pytest.raises(ValueError, match="they belong to another model"):
        diffgeo.load(folder)


def test_an_offline_hub_id_says_offline_and_not_cached():
    with pytest.raises(FileNotFoundError, match=r"not in the local Hugging Face cache .*HF_HUB_OFFLINE=1"):
        diffgeo.load("nobody-here/no-such-model")


def test_a_bad_provenance_file_is_named(tmp_path, tiny_folder):
    folder = _broken(tmp_path, tiny_folder, "prov")
    (folder / "provenance.json").write_text(json.dumps(["not", "a", "dict"]))
    with pytest.raises(ValueError, match=r"prov/provenance.json holds a JSON list"):
        diffgeo.load(folder)


# -- the command line ---------------------------------------------------------------------------------------
def _cli(argv, capsys) -> str:
    from diffgeo.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err  # one line, no traceback
    return err[0]


@pytest.mark.parametrize("args, named", [
    (["--n", "0"], "--n"), (["--n", "x"], "--n"), (["--steps", "-1"], "--steps"), (["--seed", "-3"], "--seed"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
])
def test_the_command_line_refuses_bad_arguments_in_one_line_before_creating_anything(tmp_path, capsys, args, named):
    out = tmp_path / "figures"
    line = _cli(["tour", "--out", str(out), *args], capsys)
    assert named in line and not out.exists()


def test_an_unwritable_out_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    import diffgeo.analyses.tour

    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(diffgeo.analyses.tour, "load", lambda *a, **k: pytest.fail("loaded a model despite a bad --out"))
    assert "is a file, not a folder" in _cli(["tour", "--out", str(tmp_path / "afile")], capsys)
    assert "cannot be created" in _cli(["tour", "--out", str(tmp_path / "afile" / "sub")], capsys)


def test_steps_beyond_the_schedule_leave_no_folder(tmp_path, capsys):
    out = tmp_path / "figures"
    assert "steps=5000 exceeds the 1000 training timesteps" in _cli(
        ["tour", "--steps", "5000", "--n", "1", "--out", str(out)], capsys)
    assert not out.exists()


def test_fast_only_changes_the_defaults(monkeypatch):
    import diffgeo.cli.tour
    from diffgeo.cli import main

    seen = []
    monkeypatch.setattr(diffgeo.cli.tour, "run_tour", lambda model, **kw: seen.append(kw))
    main(["tour", "--fast", "--n", "3", "--steps", "4", "--out", "unused"])
    main(["tour", "--fast", "--out", "unused"])
    main(["tour", "--steps", "7", "--out", "unused"])
    assert [(kw["n"], kw["steps"]) for kw in seen] == [(3, 4), (8, 10), (64, 7)]


# -- found by the property tests and the sweep beyond the list ------------------------------------------
def test_more_arguments_named(shapes_model):
    from diffgeo.geometry.hstats import h_statistics

    with pytest.raises(ValueError, match="images contains NaN"):  # the [-1, 1] range test let NaN through
        shapes_model.encode_image(torch.full(X, float("nan")))
    with pytest.raises(TypeError, match="chunk_size must be an integer, got str '2'"):
        diffgeo.local_basis(shapes_model, _x(), 500, 1, chunk_size="2", progress=False)
    with pytest.raises(TypeError, match="traj must be a diffgeo Trajectory"):
        h_statistics(shapes_model, "traj")
    with pytest.raises(ValueError, match="h_module='middle': the U-Net has no module of that name"):
        diffgeo.load("shapes", h_module="middle")
    with pytest.raises(ValueError, match="name_or_path is empty"):
        diffgeo.load("")
