"""The attractor-recovery benchmark: scoring, user methods, tables and the command line."""

import csv

import numpy as np
import pytest

from pyrodyn.benchmark import (
    PRESETS,
    FittedMethod,
    make_data,
    markdown_table,
    preset_with,
    run_benchmark,
    score_method,
    summarize,
)
from pyrodyn.cli import main
from pyrodyn.data.systems import build_system

TINY = PRESETS["tiny"]


def oracle(train, valid, seed):
    """A user method that knows the truth: latents and rates from the data's ground truth and
    the system's own vector field. It must score perfectly."""
    system = build_system(train.truth.system, train.truth.system_params)
    return FittedMethod(latents=lambda data: data.truth.latents,
                        rates=lambda data: data.truth.rates, field=system.field)


@pytest.mark.parametrize("system", ["limit_cycle", "flip_flop", "line_attractor"])
def test_an_oracle_method_scores_perfectly(system):
    preset = preset_with(TINY, systems=(system,), n_trials=30, n_bins=40)
    data = make_data(system, "linear", 0, preset)
    train, test = data.select("train"), data.select("test")
    scores, extras = score_method(oracle(train, None, 0), train, test, fp_starts=300)
    assert scores["state_r2_true_to_inferred"] > 0.999
    assert scores["state_r2_inferred_to_true"] > 0.999
    assert scores["rate_r2"] == pytest.approx(1.0)
    assert scores["co_bps"] > 0 and scores["bits_per_spike"] > 0
    assert scores["fp_recall"] == 1.0
    if system != "line_attractor":
        assert scores["fp_error"] < 1e-3 and scores["fp_stability"] == 1.0
    else:  # found points sit anywhere along the line, sampled points at a spacing
        assert scores["fp_error"] < 0.1 and scores["shape_recovered"] == 1.0
    assert extras["found"].shape[1] == train.truth.latents.shape[-1]


def test_a_useless_method_scores_badly():
    data = make_data("limit_cycle", "linear", 0, preset_with(TINY, n_trials=30, n_bins=40))
    train, test = data.select("train"), data.select("test")
    rng = np.random.default_rng(0)

    def noise(trials):
        return rng.normal(size=trials.truth.latents.shape)

    scores, _ = score_method(FittedMethod(latents=noise), train, test)
    assert scores["state_r2_inferred_to_true"] < 0.1
    assert "co_bps" not in scores and "fp_recall" not in scores


def test_grid_writes_csv_markdown_and_plots(tmp_path):
    rows = run_benchmark(preset_with(TINY, seeds=(0, 1)), methods={"oracle": oracle},
                         out=tmp_path, log=None)
    assert {(r["method"], r["seed"]) for r in rows} == {
        (m, s) for m in ("node_affine", "gru", "oracle") for s in (0, 1)}
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and "fp_recall" in table[0]
    summary = summarize(rows)
    oracle_cell = next(c for c in summary if c["method"] == "oracle")
    assert oracle_cell["seeds"] == 2 and oracle_cell["state_r2_true_to_inferred"][0] > 0.999
    text = (tmp_path / "summary.md").read_text()
    assert text == markdown_table(summary) + "\n" and "| oracle |" in text
    assert (tmp_path / "phase_limit_cycle_linear.png").stat().st_size > 1000


def test_command_line_and_bad_names(tmp_path, capsys):
    assert main(["benchmark", "--preset", "tiny", "--steps", "3", "--out", str(tmp_path)]) == 0
    assert "| limit_cycle | linear | gru |" in capsys.readouterr().out
    assert (tmp_path / "results.csv").is_file()
    with pytest.raises(ValueError, match="unknown system 'pendulum'"):
        run_benchmark(preset_with(TINY, systems=("pendulum",)), log=None)
    with pytest.raises(ValueError, match="unknown method 'lfads'"):
        run_benchmark(preset_with(TINY, methods=("lfads",)), log=None)
