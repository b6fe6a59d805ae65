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
