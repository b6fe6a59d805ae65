"""Every example runs with tiny settings (the scripts' defaults are bigger)."""

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    covered = {"custom_model", "custom_variant", "pyro_svi_loop", "arviz_checks", "fixed_points",
               "multi_area"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == covered


def test_custom_model():
    scores = load("custom_model").main(steps=6, n_trials=20)
    assert np.isfinite(scores["bits_per_spike"])


def test_custom_variant():
    out = load("custom_variant").main(steps=8, n_trials=20)
    for losses in (out["svi_losses"], out["fit_losses"]):
        assert len(losses) == 8 and all(np.isfinite(losses))
    assert list(out["summary"].index) == ["gain", "dropout"]
    assert (out["summary"]["mean"] > 0).all()


def test_pyro_svi_loop():
    losses = load("pyro_svi_loop").main(steps=6, n_trials=12, batch_size=4)
    assert len(losses) == 6 and all(np.isfinite(losses))


def test_arviz_checks(tmp_path):
    comparison = load("arviz_checks").main(steps=6, n_trials=20, num_samples=8,
                                          out=str(tmp_path / "ppc.png"))
    assert set(comparison.index) == {"2d", "3d"}
    assert (tmp_path / "ppc.png").is_file()


def test_fixed_points():
    found, match = load("fixed_points").main(steps=6, n_trials=20)
    assert match.n_true == 9 and len(found.stability) == len(found.points)


def test_multi_area(tmp_path):
    summary, truth = load("multi_area").main(steps=4, n_trials=20, out=str(tmp_path / "g.png"))
    assert set(summary) == set(truth) == {"A<-B", "B<-A"}
    assert truth["B<-A"] > 0 and truth["A<-B"] == 0
    assert (tmp_path / "g.png").is_file()
