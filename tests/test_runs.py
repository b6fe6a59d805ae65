"""Run folders that never lie, and every command-line error one line (issue: runs a user can
trust). Each fault is injected here; the README's fault table lists them."""

import json
import os
import signal
import warnings

import numpy as np
import pytest

from pyrodyn.cli import main
from pyrodyn.data import SpikeData, load, save, synthetic

QUICK = ["--steps", "3", "--quiet", "--set", "refine_steps=0", "eval_every=1"]


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, seed in (("a", 0), ("b", 1)):
        paths[name] = tmp_path / f"{name}.npz"
        save(synthetic.limit_cycle(n_trials=14, n_bins=8, n_neurons=5, seed=seed).with_split(
            seed=seed), paths[name])
    return paths


def one_line_error(capsys, code, expected, returned=1):
    err = capsys.readouterr().err.strip()
    assert code == returned, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


def test_a_folder_of_another_fit_is_refused_and_overwrite_replaces_it(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(files["a"]), "--out", str(run), *QUICK]) == 0
    model_bytes = (run / "model.pt").read_bytes()
    record = json.loads((run / "run.json").read_text())
    assert record["data"] == load(files["a"]).fingerprint() and record["config"]["steps"] == 3
    capsys.readouterr()
    code = main(["fit", str(files["b"]), "--out", str(run), *QUICK])
    one_line_error(capsys, code, "holds a fit of other data")
    code = main(["fit", str(files["a"]), "--out", str(run), *QUICK, "--set", "lr=0.005"])
    one_line_error(capsys, code, "holds a fit of other options (lr 0.01 -> 0.005)")
    assert (run / "model.pt").read_bytes() == model_bytes  # untouched
    assert main(["fit", str(files["b"]), "--out", str(run), *QUICK, "--overwrite"]) == 0
    assert json.loads((run / "run.json").read_text())["data"] == load(files["b"]).fingerprint()


def test_a_folder_pins_the_rates_auto_gave_so_a_changed_auto_is_another_fit(files, tmp_path,
                                                                             capsys):
    import yaml

    run = tmp_path / "run"
    assert main(["fit", str(files["a"]), "--out", str(run), *QUICK]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["diffusion_prior"] == 0.0 and saved["parameter_prior"] == 1.0
    assert main(["fit", str(files["a"]), "--out", str(run), *QUICK]) == 0  # same fit: resumed
    # a folder that recorded "auto" itself (it meant 1000, then 300, before) is not resumed
    # under today's rate
    record = json.loads((run / "run.json").read_text())
    record["config"]["diffusion_prior"] = "auto"
    (run / "run.json").write_text(json.dumps(record))
    capsys.readouterr()
    code = main(["fit", str(files["a"]), "--out", str(run), *QUICK])
    one_line_error(capsys, code, "holds a fit of other options (diffusion_prior auto -> 0.0)")


@pytest.mark.parametrize("options, expected", [
    (["--set", "readout=nonsense"], "readout must be one of"),
    (["--latent-dim", "0"], "latent_dim: must be >= 1"),
    (["--device", "banana"], "unknown device 'banana'"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--set", "curriculum=5"], "curriculum: expected"),
    (["--set", "curriculum=[10]"], "curriculum: expected"),
    (["--set", "num_threads=0"], "num_threads: must be >= 1"),
    (["--set", "kl_warmup=-1"], "kl_warmup: must be >= 0"),
    (["--set", "lr=true"], "lr: must be a number"),
    (["--set", "time_budget=-1"], "time_budget: must be >= 0"),
    (["--set", "hidden=0"], "hidden: must be >= 1"),
    (["--set", "lr=!!python/object/apply:os.system [echo]"], "is not plain YAML data"),
])
def test_rejected_options_are_one_line_and_write_nothing(files, tmp_path, capsys, options,
                                                         expected):
    run = tmp_path / "rejected"
    code = main(["fit", str(files["a"]), "--out", str(run), "--steps", "2", *options])
    one_line_error(capsys, code, expected)
    assert not run.exists()


def test_a_yaml_tag_in_a_config_file_never_runs(files, tmp_path, capsys):
    marker = tmp_path / "ran"
    config = tmp_path / "bad.yaml"
    config.write_text(f'lr: !!python/object/apply:os.system ["touch {marker}"]\n')
    code = main(["fit", str(files["a"]), "--out", str(tmp_path / "r"), "--config", str(config)])
    one_line_error(capsys, code, "is not plain YAML data")
    assert not marker.exists()


def test_bad_files_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "arr.npy").rename(tmp_path / "renamed.npz")
    (tmp_path / "text.npz").write_text("hello")
    code = main(["fit", str(tmp_path / "renamed.npz"), "--out", str(tmp_path / "r")])
    one_line_error(capsys, code, "holds one .npy array, not an .npz archive")
    code = main(["fit", str(tmp_path / "text.npz"), "--out", str(tmp_path / "r")])
    err = one_line_error(capsys, code, "is not an .npz archive")
    assert "allow_pickle" not in err
    import h5py

    with h5py.File(tmp_path / "lfads.h5", "w") as f:
        for key in ("train_encod_data", "valid_encod_data"):
            f[key] = np.zeros((4, 5))
    code = main(["fit", str(tmp_path / "lfads.h5"), "--out", str(tmp_path / "r")])
    one_line_error(capsys, code, "must be (trial, time, neuron), got shape (4, 5)")


def test_posterior_with_no_draws_is_one_line(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(files["a"]), "--out", str(run), *QUICK]) == 0
    capsys.readouterr()
    code = main(["posterior", str(run), str(files["a"]), "--out", str(tmp_path / "p.nc"),
                 "--num-samples", "0"])
    one_line_error(capsys, code, "num_samples and batch_size: must be >= 1")


def test_set_takes_several_options_at_once(files, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", str(files["a"]), "--out", str(run), "--quiet", "--set", "steps=2",
                 "lr=0.005", "refine_steps=0"]) == 0
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["steps"] == 2 and config["lr"] == 0.005


def test_a_file_without_a_split_gets_a_recorded_one(tmp_path, capsys):
    data = synthetic.two_area(n_trials=16, n_bins=8, n_neurons=4, seed=0)
    raw = tmp_path / "raw.npz"
    save(SpikeData(data.spikes, dt=data.dt, neuron_area=data.neuron_area), raw)
    run = tmp_path / "run"
    assert main(["fit", str(raw), "--out", str(run), "--model", "multi-area", *QUICK]) == 0
    assert "made a split (70/15/15, seed 0)" in capsys.readouterr().out
    split = json.loads((run / "split.json").read_text())["split"]
    assert len(split) == 16 and {"train", "valid", "test"} <= set(split)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    out = tmp_path / "p.nc"
    assert main(["posterior", str(run), str(raw), "--out", str(out), "--num-samples", "2"]) == 0
    assert "2 trials" in capsys.readouterr().out  # the recorded test split


def test_an_npz_without_dt_warns(tmp_path):
    np.savez(tmp_path / "no_dt.npz", spikes=np.ones((2, 3, 4)))
    with pytest.warns(UserWarning, match="holds no 'dt'; assuming bins of 10 ms"):
        assert load(tmp_path / "no_dt.npz").dt == 0.01
    np.savez(tmp_path / "dt.npz", spikes=np.ones((2, 3, 4)), dt=0.005)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(tmp_path / "dt.npz").dt == 0.005


def test_sigterm_during_a_fit_is_one_line_and_the_rerun_resumes(files, tmp_path, capsys,
                                                                 interrupt_fit):
    run = tmp_path / "run"
    undo = interrupt_fit(2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    command = ["fit", str(files["a"]), "--out", str(run), "--quiet", "--set", "steps=6",
               "refine_steps=0", "batch_size=4"]
    code = main(command)
    one_line_error(capsys, code, "fit interrupted by SIGTERM at step 3; checkpoint saved",
                   returned=130)
    assert (run / "checkpoint.pt").is_file() and not (run / "model.pt").exists()
    undo()
    assert main(command) == 0
    losses = json.loads((run / "losses.json").read_text())["losses"]
    assert len(losses) == 6


def test_a_recording_on_the_command_line(tmp_path, capsys):
    """NWB options reach the loader; the file has no split, so one is made and recorded."""
    pytest.importorskip("pynwb")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
    from test_io import write_nwb

    rng = np.random.default_rng(1)
    counts = rng.poisson(1.2, (14, 10, 4))
    path = tmp_path / "session.nwb"
    write_nwb(path, counts, 0.02, np.arange(14) * 2.0, 0.3, ["M1", "M1", "PMd", "PMd"],
              with_electrodes=False)
    run = tmp_path / "run"
    assert main(["fit", str(path), "--out", str(run), "--dt", "0.02", "--align", "go_cue_time",
                 "--window", "0", "0.2", "--area-column", "brain_area", "--model", "multi-area",
                 "--latent-dim", "1", *QUICK]) == 0
    assert "made a split" in capsys.readouterr().out
    assert main(["evaluate", str(run), str(path), "--dt", "0.02", "--align", "go_cue_time",
                 "--window", "0", "0.2", "--area-column", "brain_area"]) == 0
    code = main(["fit", str(tmp_path / "x.npz"), "--out", str(run), "--align", "go"])
    one_line_error(capsys, code, "no such file")
    save(synthetic.lorenz(n_trials=4, n_bins=5, n_neurons=3), tmp_path / "x.npz")
    code = main(["fit", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r2"), "--align", "go"])
    one_line_error(capsys, code, "apply to .nwb files only")
    code = main(["fit", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r2"), "--dt", "0.5"])
    one_line_error(capsys, code, "says its bins are 0.01 s, but 0.5 s was given")


def test_runs_without_a_terminal_log_progress_lines(files, tmp_path, caplog):
    import logging

    from pyrodyn.config import RunConfig, build_run
    from pyrodyn.inference import fit

    data = load(files["a"])
    config = RunConfig(steps=4, eval_every=2, progress_every=0.0, refine_steps=0)
    model, guide = build_run(config, data.select("train"))
    with caplog.at_level(logging.INFO, logger="pyrodyn"):
        fit(model, guide, data.select("train"), valid=data.select("valid"), progress=False,
            options=config.fit_options())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit: step")]
    assert len(lines) == 4 and lines[-1].startswith("fit: step 4/4 (100%), loss ")
    assert "valid bits per spike" in lines[-1] and "ETA 0 s" in lines[-1]
