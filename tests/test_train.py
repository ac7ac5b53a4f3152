"""Training options that decide what the embedded models are: the v-prediction target and its export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from diffgeo.cli.train import main
from diffgeo.training import average, export, held_out_loss, loss_weights, train, training_target


def test_v_target_satisfies_the_identities_that_sampling_inverts():
    # For x_t = sqrt(a) x0 + sqrt(1-a) e and v = sqrt(a) e - sqrt(1-a) x0 (Salimans & Ho 2022):
    # x0 = sqrt(a) x_t - sqrt(1-a) v and e = sqrt(a) v + sqrt(1-a) x_t, at every noise level.
    g = torch.Generator().manual_seed(0)
    x0, e = torch.rand(5, 3, 4, 4, generator=g) * 2 - 1, torch.randn(5, 3, 4, 4, generator=g)
    a = torch.tensor([1e-5, 0.01, 0.3, 0.9, 0.9999], dtype=torch.float64)
    x0, e = x0.double(), e.double()
    aa = a.view(-1, 1, 1, 1)
    x_t = aa.sqrt() * x0 + (1 - aa).sqrt() * e
    v = training_target(x0, e, a, "v_prediction")
    torch.testing.assert_close(aa.sqrt() * x_t - (1 - aa).sqrt() * v, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(aa.sqrt() * v + (1 - aa).sqrt() * x_t, e, rtol=0, atol=1e-12)
    assert torch.equal(training_target(x0, e, a, "epsilon"), e)
    with pytest.raises(ValueError, match="use one of"):
        training_target(x0, e, a, "x0")


def test_a_v_model_exports_as_v_and_loads_with_the_eps_it_implies(tmp_path):
    import diffgeo

    run = tmp_path / "run"
    train("shapes", run_dir=run, steps=1, threads=1, progress=False, prediction="v_prediction")
    folder = export("shapes", run_dir=run, dest=tmp_path / "v1")
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    assert json.loads((folder / "provenance.json").read_text())["prediction_type"] == "v_prediction"
    model = diffgeo.load(folder, device="cpu")
    # the model's eps is the v output converted with the schedule, computed here from the raw U-Net
    x_t, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), 900
    a = model.scheduler.alphas_cumprod[t]
    with torch.no_grad():
        v = model.unet(x_t, torch.full((2,), t)).sample
        got = model.eps(x_t, t)
    torch.testing.assert_close(got, a.sqrt() * v + (1 - a).sqrt() * x_t, rtol=1e-5, atol=1e-5)
    # a run directory keeps its prediction: resuming it as an epsilon model is refused, not mixed
    with pytest.raises(ValueError, match="v_prediction model"):
        train("shapes", run_dir=run, steps=2, threads=1, progress=False)
    with pytest.raises(ValueError, match="has the v loss already"):
        train("shapes", run_dir=tmp_path / "r2", steps=1, threads=1, progress=False, prediction="v_prediction",
              loss_weight="v")


def test_a_chain_of_warm_starts_is_recorded_whole(tmp_path):
    # A -> B -> C, each a one-step run warm-started from the previous export: C's provenance must name
    # B's command and, nested in it, A's; its total wall time is the sum of the three recorded runs.
    folders, commands = [], ["run A", "run B", "run C"]
    for i, command in enumerate(commands):
        run = tmp_path / f"run{i}"
        train("shapes", run_dir=run, steps=i + 1, threads=1, progress=False,
              init=folders[-1] if folders else None)
        folders.append(export("shapes", run_dir=run, dest=tmp_path / f"export{i}", command=command))
    prov = [json.loads((f / "provenance.json").read_text()) for f in folders]
    assert [p["steps"] for p in prov] == [1, 2, 3]
    ws = prov[2]["warm_start"]
    assert (ws["from"], ws["steps"], ws["warm_start"]["from"], ws["warm_start"]["steps"]) == ("run B", 2, "run A", 1)
    assert "warm_start" not in ws["warm_start"]
    walls = [p["wall_seconds"] for p in prov]
    assert prov[2]["wall_seconds_total"] == pytest.approx(sum(walls), abs=0.2)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_the_x0_error_by_the_capped_snr(prediction):
    # Whatever the model outputs, its x0 estimate follows from x_t (eps: x0 = (x_t - sqrt(1-a) eps) / sqrt(a);
    # v: x0 = sqrt(a) x_t - sqrt(1-a) v), and min-SNR-gamma (Hang et al. 2023) asks that the weighted
    # loss of the output equal min(SNR, gamma) times the MSE of that x0 estimate, SNR = a / (1 - a).
    g = torch.Generator().manual_seed(3)
    a = torch.tensor([1e-4, 0.02, 0.3, 0.5, 0.83, 0.97, 0.9999], dtype=torch.float64)
    aa = a.view(-1, 1, 1, 1)
    x0 = torch.rand(7, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    e = torch.randn(7, 3, 4, 4, generator=g, dtype=torch.float64)
    x_t = aa.sqrt() * x0 + (1 - aa).sqrt() * e
    target = training_target(x0, e, a, prediction)
    out = target + 0.3 * torch.randn(7, 3, 4, 4, generator=g, dtype=torch.float64)
    if prediction == "epsilon":
        x0_hat = (x_t - (1 - aa).sqrt() * out) / aa.sqrt()
    else:
        x0_hat = aa.sqrt() * x_t - (1 - aa).sqrt() * out
    for gamma in (1.0, 5.0):
        weighted = loss_weights(a, "min-snr", gamma, prediction) * (out - target).pow(2).mean(dim=(1, 2, 3))
        expected = (a / (1 - a)).clamp(max=gamma) * (x0_hat - x0).pow(2).mean(dim=(1, 2, 3))
        torch.testing.assert_close(weighted, expected, rtol=1e-9, atol=0)
    if prediction == "v_prediction":
        with pytest.raises(ValueError, match="reweights an epsilon model"):
            loss_weights(a, "v", 1000.0, prediction)


def test_ema_without_warmup_averages_at_the_full_decay_from_the_init(tmp_path):
    # One step from an init with decay d: without the ramp the EMA is d * init + (1 - d) * model; with the
    # ramp (1 + k) / (10 + k) at k = 0 it is 0.1 * init + 0.9 * model (min(d, 0.1)).
    from safetensors.torch import load_file

    from diffgeo.core.io import load_tensors_json

    train("shapes", run_dir=tmp_path / "a", steps=1, threads=1, progress=False)
    init = export("shapes", run_dir=tmp_path / "a", dest=tmp_path / "init", command="run A")
    w0 = load_file(str(init / "unet" / "diffusion_pytorch_model.safetensors"))
    for warmup, mix in ((False, 0.9), (True, 0.1)):
        run = tmp_path / f"b{warmup}"
        ckpt = train("shapes", run_dir=run, steps=2, threads=1, progress=False, init=init, ema_decay=0.9,
                     ema_warmup=warmup, batch_size=4)
        tensors, meta = load_tensors_json(ckpt)
        # the first step of the LR warm-up moves each weight by about lr / 200 = 1.5e-6, near float32 rounding of
        # the weights, so read the mix as the least-squares fit of ema - model = mix * (init - model) over all
        # 2.7M weights, which averages the rounding out
        d_init = torch.cat([(w0[k] - tensors[f"model.{k}"]).double().flatten() for k in w0])
        d_ema = torch.cat([(tensors[f"ema.{k}"] - tensors[f"model.{k}"]).double().flatten() for k in w0])
        assert d_init.abs().max() > 0  # the step moved the model
        fitted = float((d_ema * d_init).sum() / (d_init * d_init).sum())
        assert fitted == pytest.approx(mix, abs=0.02), (warmup, fitted)
    out = export("shapes", run_dir=tmp_path / "bFalse", dest=tmp_path / "out")
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["ema_decay"], prov["batch_size"]) == (0.9, 4)
    assert "--ema-decay 0.9 --batch-size 4 --no-ema-warmup" in prov["training_command"]
    # resuming with another decay or batch size is refused and leaves the checkpoint as it was
    before = (tmp_path / "bFalse" / "checkpoint.safetensors").read_bytes()
    for change in ({"ema_decay": 0.99}, {"batch_size": 8}, {"ema_warmup": True}, {"lr_decay": True}):
        with pytest.raises(ValueError, match="resume with that value"):
            train("shapes", run_dir=tmp_path / "bFalse", steps=3, threads=1, progress=False, init=init,
                  **{"ema_decay": 0.9, "batch_size": 4, "ema_warmup": False, **change})
    assert (tmp_path / "bFalse" / "checkpoint.safetensors").read_bytes() == before


def test_an_average_is_the_mean_of_its_inputs_and_counts_their_shared_init_once(tmp_path):
    # A, then B and C warm-started from A with other seeds: the average of B and C holds the mean of their
    # weights, names both commands, and its total wall time counts A once (A + B + C + the average itself).
    import diffgeo
    from safetensors.torch import load_file

    def weights(folder):
        return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))

    train("shapes", run_dir=tmp_path / "a", steps=1, threads=1, progress=False)
    a = export("shapes", run_dir=tmp_path / "a", dest=tmp_path / "A", command="run A")
    b, c = (export("shapes", run_dir=train("shapes", run_dir=tmp_path / r, steps=2, seed=s, threads=1,
                                           progress=False, init=a).parent, dest=tmp_path / r.upper(), command=f"run {r}")
            for s, r in ((1, "b"), (2, "c")))
    soup = average("shapes", [b, c], dest=tmp_path / "soup", progress=False)
    wb, wc, ws = weights(b), weights(c), weights(soup)
    assert any(not torch.equal(wb[k], wc[k]) for k in wb)  # the two inputs differ
    for k in wb:
        torch.testing.assert_close(ws[k], (wb[k] + wc[k]) / 2, rtol=1e-6, atol=1e-9)
    prov = diffgeo.load(soup, device="cpu").provenance
    assert [d["training_command"] for d in prov["averaged"]] == ["run b", "run c"]
    walls = [json.loads((f / "provenance.json").read_text())["wall_seconds"] for f in (a, b, c)]
    assert prov["wall_seconds_total"] == pytest.approx(sum(walls) + prov["wall_seconds"], abs=0.3)
    # a run warm-started from the average keeps the whole tree, and still counts A once
    run = train("shapes", run_dir=tmp_path / "d", steps=3, threads=1, progress=False, init=soup).parent
    later = json.loads((export("shapes", run_dir=run, dest=tmp_path / "D") / "provenance.json").read_text())
    assert [d["training_command"] for d in later["warm_start"]["averaged"]] == ["run b", "run c"]
    assert later["wall_seconds_total"] == pytest.approx(prov["wall_seconds_total"] + later["wall_seconds"], abs=0.3)

    # bad inputs are refused with the reason, and leave the existing average untouched
    before = {f: f.read_bytes() for f in soup.rglob("*") if f.is_file()}
    other = tmp_path / "V"
    shutil.copytree(c, other)
    config = other / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"}))
    for inputs, match in (([b], "at least two"), ([b, other], "same architecture, schedule, prediction"),
                          ([b, tmp_path / "a"], "no provenance.json")):
        with pytest.raises(ValueError, match=match):
            average("shapes", inputs, dest=soup, progress=False)
    assert {f: f.read_bytes() for f in soup.rglob("*") if f.is_file()} == before
    with pytest.raises(SystemExit):  # the command line refuses training options beside --average
        main(["shapes", "--average", str(b), str(c), "--export-to", str(soup), "--init", str(a)])
    assert {f: f.read_bytes() for f in soup.rglob("*") if f.is_file()} == before
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_held_out_loss_of_a_zero_output_is_its_expected_epsilon_error(prediction):
    # A U-Net that outputs 0: as an epsilon model its eps error is |noise|^2, expectation 1; as a v model its
    # implied eps is sqrt(1-a) x_t, off by sqrt(a) v, so the eps error is a (a |e|^2 + (1-a) |x0|^2) in
    # expectation (e independent of x0), averaged over the evenly spread timesteps. Over 4 x 64 x 3,072
    # values the sampling sd of the mean is about 0.002 (chi-square, 786k values), so 0.01 is 5 sd.
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    from diffgeo.training.data import _batch, get_recipe
    from diffgeo.training.losses import HELD_OUT_SEED

    class Zero(torch.nn.Module):
        def forward(self, x, t, **_):
            return SimpleNamespace(sample=torch.zeros_like(x))

    [got] = held_out_loss("shapes", [Zero()], prediction)
    if prediction == "epsilon":
        expected = 1.0
    else:
        abar = DDPMScheduler(**get_recipe("shapes").scheduler).alphas_cumprod.double()
        a = abar[((torch.arange(64) + 0.5) * 1000 / 64).long()]
        x2 = torch.stack([_batch("shapes", b, 64, HELD_OUT_SEED)[0].double().pow(2).mean(dim=(1, 2, 3))
                          for b in range(4)])  # (4, 64): each scene's mean x0^2
        expected = float((a * (a + (1 - a) * x2)).mean())
    assert got == pytest.approx(expected, abs=0.01)
