"""Data-parallel fit: two gloo processes (torchrun) against one process with the same global
minibatch. A deterministic guide (a point estimate, no dropout) makes the two exactly
comparable: same losses at every step, the same parameters on both ranks and as one process."""

import subprocess
import sys
import textwrap

import pytest
import torch

from pyrodyn.data import synthetic
from pyrodyn.inference import MAPGuide, fit
from pyrodyn.models import LatentODEModel

SETUP = """
import torch
from pyrodyn.data import synthetic
from pyrodyn.inference import MAPGuide
from pyrodyn.models import LatentODEModel

def build():
    torch.manual_seed(0)
    model = LatentODEModel(8, 2, readout="affine")
    return model, MAPGuide(model, dropout=0.0)

data = synthetic.lorenz(n_trials=22, n_bins=12, n_neurons=8, seed=0)  # 22: uneven shards
OPTIONS = dict(steps=8, batch_size=9, lr=0.02, progress=False, kl_warmup=3)
"""

WORKER = SETUP + """
import sys
import torch.distributed as dist
from pyrodyn.inference import fit

dist.init_process_group("gloo")
model, guide = build()
result = fit(model, guide, data, checkpoint=sys.argv[1] + "/checkpoint.pt", **OPTIONS)
rank = dist.get_rank()
flat = torch.cat([p.detach().reshape(-1) for p in [*model.parameters(), *guide.parameters()]])
torch.save({"losses": torch.tensor(result.losses), "params": flat},
           f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_take_the_single_process_steps(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", str(script), str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])  # identical on every rank
    assert torch.equal(ranks[0]["losses"], ranks[1]["losses"])
    namespace = {}
    exec(SETUP, namespace)  # the same model, data and options in this one process
    model, guide = namespace["build"]()
    single = fit(model, guide, namespace["data"], **namespace["OPTIONS"])
    assert torch.allclose(ranks[0]["losses"], torch.tensor(single.losses), rtol=1e-4)
    flat = torch.cat([p.detach().reshape(-1) for p in [*model.parameters(),
                                                       *guide.parameters()]])
    assert torch.allclose(ranks[0]["params"], flat, atol=1e-4)
    assert (tmp_path / "checkpoint.pt").exists()


@pytest.mark.slow
def test_fit_nproc_runs_torchrun_and_rank_0_writes_the_run(tmp_path, capsys):
    import json

    from pyrodyn.cli import main
    from pyrodyn.data import io

    data = synthetic.lorenz(n_trials=30, n_bins=12, n_neurons=8, seed=0)
    io.save(data.with_split(valid=0.2, test=0.2, seed=0), tmp_path / "d.npz")
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "d.npz"), "--out", str(run), "--nproc", "2",
                 "--steps", "4", "--quiet", "--set", "refine_steps=2"]) == 0
    assert len(json.loads((run / "losses.json").read_text())["losses"]) == 4
    assert "valid" in json.loads((run / "metrics.json").read_text())
    assert main(["fit", str(tmp_path / "d.npz"), "--out", str(run), "--nproc", "0"]) == 1
    assert "--nproc: must be >= 1" in capsys.readouterr().err


def test_a_batch_smaller_than_the_processes_is_refused(monkeypatch):
    from pyrodyn.inference import distributed

    monkeypatch.setattr(distributed, "world", lambda: (0, 4))
    data = synthetic.lorenz(n_trials=6, n_bins=8, n_neurons=4, seed=0)
    model = LatentODEModel(4, 2)
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        fit(model, MAPGuide(model), data, steps=1, batch_size=3, progress=False)
