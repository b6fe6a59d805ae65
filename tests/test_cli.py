import numpy as np

from pyrodyn import load
from pyrodyn.cli import main


def test_simulate_writes_a_loadable_file(tmp_path, capsys):
    out = tmp_path / "ring.npz"
    code = main(["simulate", "ring_attractor", "--out", str(out), "--n-trials", "10",
                 "--n-bins", "20", "--n-neurons", "6", "--heldout", "2", "--seed", "3"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    data = load(out)
    assert data.shape == (10, 20, 6) and len(data.heldout_neurons) == 2
    assert sorted(set(data.split.tolist())) == ["test", "train", "valid"]
    assert data.truth.system == "ring_attractor" and data.inputs is not None
    again = tmp_path / "again.npz"
    main(["simulate", "ring_attractor", "--out", str(again), "--n-trials", "10",
          "--n-bins", "20", "--n-neurons", "6", "--heldout", "2", "--seed", "3"])
    assert np.array_equal(load(again).spikes, data.spikes)


def test_errors_are_one_line(tmp_path, capsys):
    code = main(["simulate", "lorenz", "--out", str(tmp_path / "x.csv"), "--n-trials", "4",
                 "--n-bins", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().count("\n") == 0 and "unsupported extension '.csv'" in err
    assert "Traceback" not in err


def test_fit_posterior_evaluate_end_to_end(tmp_path, capsys, monkeypatch):
    import json

    import arviz as az
    import torch

    import pyrodyn.inference
    from pyrodyn._isolation import torch_threads

    # the recipe's thread count holds for scoring too, and the caller's comes back after
    evaluate, threads_seen = pyrodyn.inference.evaluate, []

    def counting_evaluate(*args, **kwargs):
        threads_seen.append(torch.get_num_threads())
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(pyrodyn.inference, "evaluate", counting_evaluate)

    data_path = tmp_path / "lorenz.npz"
    assert main(["simulate", "lorenz", "--out", str(data_path), "--n-trials", "20",
                 "--n-bins", "15", "--n-neurons", "8", "--heldout", "2"]) == 0
    run = tmp_path / "run"
    with torch_threads(2):  # a caller's count other than the recipe's, given back after
        code = main(["fit", str(data_path), "--out", str(run), "--steps", "6", "--latent-dim",
                     "2", "--readout", "affine", "--set", "batch_size=6", "--set",
                     "curriculum=null", "--set", "eval_every=3", "--quiet"])
        threads_after = torch.get_num_threads()
    assert code == 0
    assert threads_seen and set(threads_seen) == {1} and threads_after == 2
    # parameters.pt: a one-area fit's readout gains get their Laplace posterior by default
    for name in ("config.yaml", "checkpoint.pt", "model.pt", "losses.json", "metrics.json",
                 "parameters.pt"):
        assert (run / name).is_file(), name
    losses = json.loads((run / "losses.json").read_text())
    assert len(losses["losses"]) == 6 and [v["step"] for v in losses["valid"]] == [3, 6]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"bits_per_spike", "co_bps", "rate_r2", "state_r2_true_to_inferred",
            "state_r2_inferred_to_true"} <= set(metrics["test"])

    out = tmp_path / "post.nc"
    assert main(["posterior", str(run), str(data_path), "--out", str(out),
                 "--num-samples", "4"]) == 0
    idata = az.from_netcdf(str(out))
    assert idata.posterior["latents"].shape == (1, 4, 4, 15, 2)
    assert idata.posterior.attrs["guide"] == "normal"
    # the test split's own posterior, as `evaluate` scores it: the file's other trials do not
    # narrow it (they did, through the minibatch scale of the refined paths' curvature)
    from pyrodyn.cli import _load_run

    config, model, guide, data = _load_run(run, load(data_path))
    alone = pyrodyn.inference.posterior(model, guide, data.select("test"), num_samples=4,
                                        refine_steps=config.refine_steps)
    assert np.allclose(idata.posterior["latents"].values[0], alone.draws["latents"], atol=1e-5)

    capsys.readouterr()
    assert main(["evaluate", str(run), str(data_path), "--split", "valid"]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(printed.strip().splitlines()[-1])["valid"]
    assert {"bits_per_spike", "co_bps", "rate_r2"} <= set(scores)
    # ground truth in the file: a reliability table and plot beside the run
    table = json.loads((run / "reliability_valid.json").read_text())
    assert set(table) == {"rates", "latents"} and len(table["rates"]) == 9
    assert all(0 <= v <= 1 for curve in table.values() for v in curve.values())
    assert (run / "reliability_valid.png").is_file() and "50% interval" in printed


def test_fit_errors_are_one_line(tmp_path, capsys):
    data_path = tmp_path / "d.npz"
    main(["simulate", "lorenz", "--out", str(data_path), "--n-trials", "6", "--n-bins", "5"])
    capsys.readouterr()
    assert main(["fit", str(data_path), "--out", str(tmp_path / "r"), "--set", "hiden=3"]) == 1
    err = capsys.readouterr().err
    assert "unknown option(s) hiden" in err and err.count("\n") == 1
    # --steps beside --budget is not silently dropped (this fit then stops on the data)
    assert main(["fit", str(data_path), "--out", str(tmp_path / "r"), "--steps", "3000",
                 "--budget", "60", "--model", "multi-area"]) == 1
    assert "runs on the clock for 60 s; 3000 steps only place" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(data_path)]) == 1
    assert "holds no config.yaml" in capsys.readouterr().err


def test_multi_area_fit_posterior_evaluate(tmp_path, capsys):
    import json

    import arviz as az

    data_path = tmp_path / "two.npz"
    assert main(["simulate", "two_area", "--out", str(data_path), "--n-trials", "16",
                 "--n-bins", "12", "--n-neurons", "4"]) == 0
    run = tmp_path / "run"
    code = main(["fit", str(data_path), "--out", str(run), "--model", "multi-area",
                 "--latent-dim", "2", "--steps", "4", "--set", "batch_size=8",
                 "--set", "hidden=16", "--set", "parameter_prior=1", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "channel B<-A: strength" in printed and "channel A<-B: strength" in printed
    channels = json.loads((run / "communication.json").read_text())
    assert set(channels) == {"A<-B", "B<-A"}
    assert channels["B<-A"]["scale_sd"] is None  # the weights' Laplace already widens them
    assert (run / "communication.png").is_file()
    assert "Laplace posterior over the readout weights, channels" in printed
    assert (run / "parameters.pt").is_file()  # posterior and evaluate draw the weights from it
    out = tmp_path / "post.nc"
    assert main(["posterior", str(run), str(data_path), "--out", str(out),
                 "--num-samples", "3"]) == 0
    idata = az.from_netcdf(str(out))
    assert idata.posterior.attrs["parameter_uncertainty"] == "laplace"
    assert idata.posterior["comm.B<-A"].shape == (1, 3, 3, 12, 2)  # 3 test trials
    assert idata.posterior["latents"].shape[-1] == 4
    assert main(["evaluate", str(run), str(data_path)]) == 0
    # The default: the channels' scales (channel_scales.pt) reach the exported draws.
    run = tmp_path / "run_scales"
    assert main(["fit", str(data_path), "--out", str(run), "--model", "multi-area",
                 "--latent-dim", "2", "--steps", "4", "--set", "batch_size=8",
                 "--set", "hidden=16", "--set", "refine_steps=2", "--quiet"]) == 0
    channels = json.loads((run / "communication.json").read_text())
    assert channels["B<-A"]["scale_sd"] > 0 and (run / "channel_scales.pt").is_file()
    assert not (run / "parameters.pt").exists()  # parameter_prior "auto": none on many areas
    assert main(["posterior", str(run), str(data_path), "--out", str(out),
                 "--num-samples", "3"]) == 0
    assert az.from_netcdf(str(out)).posterior.attrs["parameter_uncertainty"] == "laplace"
    # A data file without area labels gets a one-line error, not a traceback.
    lorenz = tmp_path / "lorenz.npz"
    main(["simulate", "lorenz", "--out", str(lorenz), "--n-trials", "6", "--n-bins", "5"])
    capsys.readouterr()
    assert main(["fit", str(lorenz), "--out", str(tmp_path / "r"), "--model", "multi-area"]) == 1
    assert "no area labels" in capsys.readouterr().err


def test_demo_runs_end_to_end_small(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--trials", "40", "--steps", "3", "--num-samples",
                 "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bits per spike" in printed and "the 90% interval" in printed
    assert "true rates inside the 50% posterior interval" in printed
    for name in ("posterior.nc", "latents.png", "model.pt", "checkpoint.pt", "lorenz.npz"):
        assert (out / name).is_file()
    # the demo's folder is its own: a demo of other options replaces the earlier one
    assert main(["demo", "--out", str(out), "--trials", "40", "--steps", "2", "--num-samples",
                 "2", "--quiet"]) == 0
    assert '"steps": 2' in (out / "run.json").read_text().replace("\n", "")


def test_compare_ranks_runs_by_heldout_evidence(tmp_path, capsys):
    import pandas as pd

    data_path = tmp_path / "lorenz.npz"
    main(["simulate", "lorenz", "--out", str(data_path), "--n-trials", "16", "--n-bins", "10",
          "--n-neurons", "6"])
    for dim in ("2", "3"):
        assert main(["fit", str(data_path), "--out", str(tmp_path / f"d{dim}"), "--steps", "3",
                     "--latent-dim", dim, "--set", "batch_size=8", "--set", "curriculum=null",
                     "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "d2"), str(tmp_path / "d3"), str(data_path),
                 "--out", str(tmp_path / "cmp"), "--num-particles", "4",
                 "--refine-steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert "standard errors" in printed
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv", index_col=0)
    assert set(table.index) == {"d2", "d3"} and (tmp_path / "cmp" / "compare.png").is_file()
    # each run's own held-out evidence: finite, and not the same for two models
    assert np.isfinite(table["elpd_loo"]).all() and table["elpd_loo"].nunique() == 2
