"""Choosing the latent dimensionality and the readout by held-out evidence."""

import numpy as np
import pytest

from pyrodyn import cli
from pyrodyn.config import RunConfig
from pyrodyn.data import save, synthetic
from pyrodyn.inference import Evidence
from pyrodyn.selection import Candidate, choose, parse_latent_dims, select, tolerance

FAST = dict(steps=60, batch_size=32, kl_warmup=20, curriculum=[10, 20], refine_steps=5,
            eval_every=60, progress_every=None)


def candidate(latent_dim, readout, log_marginal):
    values = np.asarray(log_marginal, float)
    evidence = Evidence(values, np.zeros_like(values), np.ones_like(values))
    return Candidate(latent_dim, readout, evidence, fit_seconds=1.0, steps=10)


def test_choose_takes_the_simplest_model_within_one_paired_standard_error():
    rng = np.random.default_rng(0)
    base = rng.normal(-500, 30, 200)             # trials differ far more than models do

    def noise():  # per-trial differences between models, of mean exactly zero
        values = rng.normal(0, 0.5, 200)
        return values - values.mean()

    two = candidate(2, "affine", base - 3 + noise())
    three = candidate(3, "affine", base + noise())
    three_flow = candidate(3, "flow", base + 0.02 + noise())
    four = candidate(4, "affine", base + 0.03 + noise())
    best, chosen = choose([four, three_flow, two, three])
    assert best is four
    assert chosen is three          # 2-d is far worse (paired); the rest are within noise
    # a nonlinear readout that predicts held-out trials better by much more than its SE wins
    flow_better = candidate(3, "flow", base + 2 + noise())
    assert choose([two, three, flow_better]) == (flow_better, flow_better)
    # where refits of one model differ by more than 2-d falls behind, 2-d is as good
    assert tolerance(0.04, 2.5) == pytest.approx(np.sqrt(0.04 ** 2 + 2 * 2.5 ** 2))
    assert choose([four, three, two], refit_spread=2.5) == (four, two)
    assert choose([four, three, two], refit_spread=1.5) == (four, three)


def test_parse_latent_dims():
    assert parse_latent_dims("1-8") == list(range(1, 9))
    assert parse_latent_dims("3, 1,2-3") == [1, 2, 3]
    for bad in ("", "a-b", "0-2", "3-"):
        with pytest.raises(ValueError, match="latent_dims"):
            parse_latent_dims(bad)


def test_select_checks_everything_before_the_first_fit():
    data = synthetic.lorenz(n_trials=20, n_bins=10, n_neurons=4, seed=0)
    with pytest.raises(ValueError, match="validation trials"):
        select(data, latent_dims=[1], readouts=["affine"], config=RunConfig(**FAST))
    split = data.with_split(valid=0.25, test=0.0, seed=0)
    with pytest.raises(ValueError, match="injective"):  # 5 latents cannot map into 4 neurons
        select(split, latent_dims=[1, 5], readouts=["flow"], config=RunConfig(**FAST))


@pytest.mark.slow
def test_select_prefers_the_flow_on_a_strongly_nonlinear_embedding():
    data = synthetic.lorenz(n_trials=200, n_bins=40, n_neurons=15, embedding="nonlinear",
                            gain=2.0, seed=0).with_split(valid=0.3, test=0.0, seed=0)
    config = RunConfig(**dict(FAST, steps=300, kl_warmup=100, curriculum=[10, 100],
                              batch_size=64, eval_every=300))
    selection = select(data, latent_dims=[3], readouts=["affine", "flow"], config=config)
    assert (selection.chosen.readout, selection.chosen.latent_dim) == ("flow", 3)
    diff, se = selection.candidates[0].evidence.compare(selection.chosen.evidence)
    assert -diff > 2 * se        # not a close call
    assert selection.config.readout == "flow" and selection.config.latent_dim == 3


@pytest.mark.slow
def test_select_keeps_the_affine_readout_on_a_log_linear_embedding():
    # The affine readout is the correctly specified one here; the flow may win only by more
    # than the tolerance. Needs dynamics that the fit gets right: where they are underfit (a
    # chaotic system in a few hundred steps), the flow's bends make up for them and earn their
    # evidence honestly (README (f)).
    data = synthetic.limit_cycle(n_trials=200, n_bins=40, n_neurons=15,
                                 seed=0).with_split(valid=0.3, test=0.0, seed=0)
    config = RunConfig(**dict(FAST, steps=600, kl_warmup=100, curriculum=[10, 100],
                              batch_size=64, eval_every=600))
    selection = select(data, latent_dims=[2], readouts=["affine", "flow"], config=config)
    assert (selection.chosen.readout, selection.chosen.latent_dim) == ("affine", 2)
    flow = selection.candidates[1]
    diff, se = flow.evidence.compare(selection.chosen.evidence)
    assert flow.readout == "flow" and diff < se    # its flexibility buys no evidence
    assert selection.config.readout == "affine"


def test_select_command_writes_the_table_plot_and_config(tmp_path, capsys):
    data = synthetic.limit_cycle(n_trials=40, n_bins=20, n_neurons=6, seed=0)
    save(data.with_split(valid=0.25, test=0.25, seed=0), tmp_path / "d.npz")
    overrides = [f"{k}={v}" for k, v in FAST.items() if k not in ("curriculum",
                                                                    "progress_every")]
    # no --readouts: the config's readout, the one a plain fit would use
    code = cli.main(["select", str(tmp_path / "d.npz"), "--out", str(tmp_path / "sel"),
                     "--latent-dims", "1-2", "--num-particles", "4",
                     "--set", "readout=affine", *overrides])
    assert code == 0
    for name in ("selection.csv", "selection.md", "selection.png", "selected.yaml"):
        assert (tmp_path / "sel" / name).is_file()
    lines = (tmp_path / "sel" / "selection.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("latent_dim,readout,log_marginal")
    assert "refitted with other seeds" in (tmp_path / "sel" / "selection.md").read_text()
    chosen = RunConfig.from_sources(tmp_path / "sel" / "selected.yaml")
    assert chosen.latent_dim in (1, 2) and chosen.readout == "affine"
    assert "chose affine readout" in capsys.readouterr().out
    assert cli.main(["select", str(tmp_path / "d.npz"), "--out", str(tmp_path / "x"),
                     "--readouts", "affine,bent"]) == 1
    assert "readout must be one of" in capsys.readouterr().err


def test_fit_latent_dim_auto_selects_then_fits_on_the_same_split(tmp_path, capsys):
    data = synthetic.limit_cycle(n_trials=30, n_bins=15, n_neurons=8, seed=0)
    save(data, tmp_path / "d.npz")                  # no split: fit makes and records one
    fast = dict(FAST, steps=20, eval_every=20, refine_steps=0)
    overrides = [f"{k}={v}" for k, v in fast.items() if k not in ("curriculum",
                                                                 "progress_every")]
    code = cli.main(["fit", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"),
                     "--latent-dim", "auto", "--readout", "affine", "--quiet",
                     "--set", *overrides])
    assert code == 0
    out = capsys.readouterr().out
    assert "--latent-dim auto: chose" in out and out.count("| affine |") == 8
    chosen = RunConfig.from_sources(tmp_path / "run" / "config.yaml").latent_dim
    assert f"chose {chosen} latent dimensions" in out
    assert (tmp_path / "run" / "split.json").is_file() and (tmp_path / "run" / "model.pt").is_file()
    assert cli.main(["fit", str(tmp_path / "d.npz"), "--out", str(tmp_path / "x"),
                     "--latent-dim", "three"]) == 1
    assert "--latent-dim" in capsys.readouterr().err
