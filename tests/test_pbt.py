"""``pyrodyn tune --backend ray``: population-based training on a local Ray with 2 CPUs."""

import csv
import json
import math

import pytest
import ray

from pyrodyn.cli import main
from pyrodyn.config import RunConfig
from pyrodyn.data import io, synthetic
from pyrodyn.pbt import MUTATIONS

SMALL = ["steps=40", "kl_warmup=10", "curriculum=null", "refine_steps=5", "hidden=32",
         "encoder_hidden=32", "eval_every=5"]


@pytest.mark.slow
def test_a_population_exploits_its_best_member_and_writes_a_config_that_reruns(tmp_path):
    data = synthetic.lorenz(n_trials=40, n_bins=20, n_neurons=10, seed=0)
    data = data.with_split(valid=0.25, test=0.0, seed=0).with_heldout_neurons(2, seed=0)
    io.save(data, tmp_path / "lorenz.npz")
    out = tmp_path / "pbt"
    command = ["tune", str(tmp_path / "lorenz.npz"), "--out", str(out), "--backend", "ray",
               "--budget", "16", "--population", "2", "--generations", "2", "--cpus", "2",
               "--num-particles", "4", "--set", *SMALL]
    assert main(command) == 0
    assert not ray.is_initialized()  # the local Ray it started is gone
    members = _members(out)
    assert len(members) == 2
    for member in members:
        assert math.isfinite(float(member["co_bps"])) and float(member["se"]) > 0, member
        assert float(member["seconds"]) >= 8.0  # each fitted its share: 16 s / 2
    # synchronous PBT: after the first generation the worse member copied the better one
    exploits = [json.loads(line) for line in (out / "pbt-1" / "pbt_global.txt").open()]
    assert len(exploits) >= 1
    target, donor = exploits[0][:2]
    assert target != donor

    best = RunConfig.from_sources(out / "best.yaml")
    assert best.budget == pytest.approx(8.0) and best.hidden == 32
    assert best.batch_size in MUTATIONS["batch_size"] + [RunConfig().batch_size]
    assert (out / "tune.png").stat().st_size > 0
    # best.yaml is a whole recipe: pyrodyn fit reruns it
    assert main(["fit", str(tmp_path / "lorenz.npz"), "--out", str(tmp_path / "rerun"),
                 "--quiet", "--config", str(out / "best.yaml"), "--set", "budget=2"]) == 0
    assert (tmp_path / "rerun" / "config.yaml").exists()

    # a rerun goes on from every member's last checkpoint: here both had spent their budget,
    # so they are only scored again, at the same steps
    assert main(command) == 0
    assert (out / "pbt-2").is_dir()
    again = _members(out)
    assert sorted(int(m["steps"]) for m in again) == sorted(int(m["steps"]) for m in members)


def _members(out):
    with open(out / "members.csv") as f:
        return list(csv.DictReader(f))
