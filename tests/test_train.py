"""Training options that decide what the embedded models are: the v-prediction target and its export."""

from __future__ import annotations

import json

import pytest
import torch

from diffgeo.train import export, train, training_target


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
    with pytest.raises(ValueError, match="plain v loss"):
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
