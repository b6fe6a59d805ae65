"""Run files are data, never code: a planted pickle payload never runs, and the error is one
line naming the file."""

import pathlib

import pytest
import torch

from pyrodyn.cli import main
from pyrodyn.data import save, synthetic
from pyrodyn.inference import AmortizedNormalGuide, fit, load_state, read_state, save_state
from pyrodyn.models import LatentODEModel


class Payload:
    """Unpickling this creates ``marker``: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def plant(path, marker):
    torch.save({"model": {"w": Payload(marker)}, "guide": {}}, path)


def test_load_state_refuses_a_payload(tmp_path):
    marker = tmp_path / "ran"
    plant(tmp_path / "model.pt", marker)
    model = LatentODEModel(4, 2)
    with pytest.raises(ValueError, match="model.pt: not a pyrodyn state file") as error:
        load_state(tmp_path / "model.pt", model, AmortizedNormalGuide(model))
    assert not marker.exists()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a file at all"])
def test_truncated_or_foreign_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="checkpoint.pt: not a pyrodyn state file") as error:
        read_state(path)
    assert "\n" not in str(error.value)


def test_a_planted_checkpoint_never_runs_on_resume(tmp_path):
    data = synthetic.limit_cycle(n_trials=8, n_bins=10, n_neurons=5, seed=0)
    marker = tmp_path / "ran"
    plant(tmp_path / "checkpoint.pt", marker)
    model = LatentODEModel(5, 2)
    with pytest.raises(ValueError, match="not a pyrodyn state file"):
        fit(model, AmortizedNormalGuide(model), data, steps=2, progress=False,
            checkpoint=tmp_path / "checkpoint.pt")
    assert not marker.exists()


def test_save_and_checkpoint_round_trip_with_weights_only(tmp_path):
    data = synthetic.limit_cycle(n_trials=8, n_bins=10, n_neurons=5, seed=0)
    model = LatentODEModel(5, 2)
    guide = AmortizedNormalGuide(model)
    fit(model, guide, data, steps=3, progress=False, checkpoint=tmp_path / "c.pt")
    save_state(tmp_path / "m.pt", model, guide)
    for name in ("c.pt", "m.pt"):
        torch.load(tmp_path / name, weights_only=True)  # raises if anything is pickled code
    assert not (tmp_path / "m.pt.partial").exists()


def test_cli_posterior_on_a_planted_model_is_one_line(tmp_path, capsys):
    path = tmp_path / "d.npz"
    save(synthetic.limit_cycle(n_trials=10, n_bins=10, n_neurons=5, seed=0).with_split(seed=0),
         path)
    run = tmp_path / "run"
    assert main(["fit", str(path), "--out", str(run), "--steps", "2", "--quiet", "--set",
                 "refine_steps=0"]) == 0
    marker = tmp_path / "ran"
    plant(run / "model.pt", marker)
    capsys.readouterr()
    assert main(["posterior", str(run), str(path), "--out", str(tmp_path / "p.nc")]) == 1
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert len(err.splitlines()) == 1 and "not a pyrodyn state file" in err
