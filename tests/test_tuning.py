"""``pyrodyn tune``: the recipe is trial 0, the study resumes after kill -9, best.yaml reruns."""

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from pyrodyn.cli import main
from pyrodyn.config import RunConfig
from pyrodyn.data import io, synthetic
from pyrodyn.tuning import search_space

optuna = pytest.importorskip("optuna")  # the [tune] extra; installed with [dev]

SMALL = ["steps=40", "kl_warmup=10", "curriculum=null", "refine_steps=5", "hidden=32",
         "encoder_hidden=32", "eval_every=5"]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    data = synthetic.lorenz(n_trials=40, n_bins=20, n_neurons=10, seed=0)
    data = data.with_split(valid=0.25, test=0.0, seed=0).with_heldout_neurons(2, seed=0)
    path = tmp_path_factory.mktemp("tune") / "lorenz.npz"
    io.save(data, path)
    return path


def test_the_default_space_holds_the_recipe():
    config = RunConfig(hidden=32, lr=0.05)
    point = search_space(optuna.trial.FixedTrial(config.to_dict()), config)
    assert point == {name: getattr(config, name) for name in point}
    assert set(point) == {"lr", "batch_size", "hidden", "encoder_hidden", "diffusion",
                          "noise_tau"}
    white = RunConfig(noise_tau=None)
    assert "noise_tau" not in search_space(optuna.trial.FixedTrial(white.to_dict()), white)


def _completed(study_dir) -> int:
    """Completed trials, read straight from the SQLite file (read-only: opening it through
    Optuna would race the tuner creating its schema)."""
    try:
        with sqlite3.connect(f"file:{study_dir}/study.db?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


@pytest.mark.slow
def test_a_killed_study_resumes_and_its_best_config_reruns(data_path, tmp_path, capsys):
    out = tmp_path / "study"
    command = [sys.executable, "-m", "pyrodyn.cli", "tune", str(data_path), "--out", str(out),
               "--budget", "16", "--trials", "4", "--num-particles", "4", "--set", *SMALL]
    log = open(tmp_path / "tune.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONHASHSEED="0"))
    deadline = time.time() + 120
    while not _completed(out):
        assert process.poll() is None, (f"tune ended before it could be killed:\n"
                                        f"{(tmp_path / 'tune.log').read_text()}")
        assert time.time() < deadline, "no trial completed within 2 minutes"
        time.sleep(0.5)
    time.sleep(1.0)  # inside trial 1's fit
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    study = optuna.load_study(study_name="pyrodyn", storage=f"sqlite:///{out}/study.db")
    first = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert first and first[0].number == 0
    assert first[0].user_attrs["config"]["batch_size"] == RunConfig().batch_size  # the recipe
    verbosity = optuna.logging.get_verbosity()
    assert main(["tune", str(data_path), "--out", str(out), "--budget", "16", "--trials", "4",
                 "--num-particles", "4", "--set", *SMALL]) == 0
    assert optuna.logging.get_verbosity() == verbosity  # Optuna's logging left as it was
    printed = capsys.readouterr().out
    assert "best trial" in printed
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    states = [row["state"] for row in rows]
    assert states[0] == "COMPLETE" and "FAIL" in states  # the cut-off trial, marked failed
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 4  # ... and run again
    done = [row for row in rows if row["state"] == "COMPLETE"]
    assert all(np.isfinite(float(row["co_bps"])) for row in done)
    assert float(done[0]["diff_to_recipe"]) == 0.0  # trial 0 is the recipe
    assert all(float(row["diff_se"]) > 0 for row in done[1:])  # paired over trials
    best = RunConfig.from_sources(out / "best.yaml")
    assert best.budget == pytest.approx(4.0) and best.hidden in (32, 64, 128, 256)
    assert main(["fit", str(data_path), "--out", str(tmp_path / "rerun"), "--quiet",
                 "--config", str(out / "best.yaml")]) == 0
