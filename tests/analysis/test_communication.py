"""Communication strengths, their summary from a multi-area posterior, export and plots."""

import arviz as az
import numpy as np
import pyro
import pytest
import xarray as xr

from pyrodyn import plots
from pyrodyn.analysis import (
    channel_strengths,
    communication_summary,
    true_communication_strengths,
)
from pyrodyn.analysis.communication import communication_sites
from pyrodyn.data import synthetic
from pyrodyn.inference import build_guide, posterior
from pyrodyn.models import MultiAreaModel


def test_strength_ignores_affine_maps_of_the_target_and_counts_per_bin():
    rng = np.random.default_rng(0)
    signal, latents = rng.normal(size=(2, 5, 20, 2))
    latents = latents @ np.array([[2.0, 0.0], [1.0, 0.8]])  # correlated, unequal spreads
    base = channel_strengths(signal, latents)
    # A map of the target's latent space maps its velocity, and so the channel's signal, too.
    stretch = np.array([[1.5, 0.5], [0.0, 1.0]])
    assert np.isclose(channel_strengths(signal @ stretch.T, latents @ stretch.T + 1), base)
    # An extra latent dimension the channel does not enter changes nothing.
    extra = np.concatenate([latents, rng.normal(size=(5, 20, 1))], -1)
    padded = np.concatenate([signal, np.zeros((5, 20, 1))], -1)
    assert np.isclose(channel_strengths(padded, extra), base, rtol=0.05)
    assert np.isclose(channel_strengths(signal, latents, bin_time=0.5), base / 2)
    centred = (latents - latents.mean((0, 1))).reshape(-1, 2)
    precision = np.linalg.inv(centred.T @ centred / len(centred))
    flat = signal.reshape(-1, 2)
    direct = np.sqrt(np.einsum("ni,ij,nj->n", flat, precision, flat).mean())
    assert np.isclose(base, direct)
    per_bin = channel_strengths(signal[None], latents[None], per_bin=True)
    assert per_bin.shape == (1, 20)
    assert np.isclose(np.sqrt((per_bin[0] ** 2).mean()), base)
    # A dimension along which the target hardly moves is ignored, not divided by.
    for spread in (0.0, 1e-3):
        still = np.concatenate([latents, spread * rng.normal(size=(5, 20, 1))], -1)
        pushed = np.concatenate([signal, np.ones((5, 20, 1))], -1)
        assert np.isclose(channel_strengths(pushed, still), base)


def test_strength_draws_share_one_whitening():
    # A dimension whose spread sits about the negligible threshold: 0.6% of the largest variance
    # in one draw, 2% in the other. Whitened per draw, the second draw would count the
    # signal along it (divided by its tiny variance) and the first not; the draws of one
    # posterior must be measured in the same units.
    rng = np.random.default_rng(1)
    state = rng.normal(size=(5, 20, 2))
    state = (state - state.mean((0, 1))) / state.reshape(-1, 2).std(0)
    noise = rng.normal(size=(5, 20, 1))
    noise = (noise - noise.mean()) / noise.std()
    draws = np.stack([np.concatenate([state, np.sqrt(v) * noise], -1) for v in (0.006, 0.02)])
    signal = np.broadcast_to(np.concatenate([0.1 * state, 0.05 * np.ones((5, 20, 1))], -1),
                             draws.shape)
    strengths = channel_strengths(signal, draws)
    assert np.isclose(strengths[0], strengths[1])


def test_true_strengths_know_which_channels_exist():
    chain = synthetic.three_area_chain(n_trials=5, n_bins=40, n_neurons=6, seed=0)
    strengths = true_communication_strengths(chain)
    assert set(strengths) == {"A<-B", "A<-C", "B<-A", "B<-C", "C<-A", "C<-B"}
    assert strengths["B<-A"] > 0.005 and strengths["C<-B"] > 0.005
    assert all(strengths[k] == 0.0 for k in ("A<-B", "A<-C", "B<-C", "C<-A"))
    with pytest.raises(ValueError, match="per-area latents"):
        true_communication_strengths(synthetic.lorenz(n_trials=2, n_bins=5, n_neurons=3))


@pytest.fixture(scope="module")
def multi_area_posterior():
    pyro.set_rng_seed(0)
    data = synthetic.two_area(n_trials=6, n_bins=15, n_neurons=5, seed=0)
    model = MultiAreaModel.from_data(data, 2, hidden=16)
    guide = build_guide("normal", model, hidden=8)
    return posterior(model, guide, data, num_samples=7, batch_size=4)


def test_summary_has_intervals_and_time_courses(multi_area_posterior):
    summary = communication_summary(multi_area_posterior, level=0.8)
    assert set(summary) == {"A<-B", "B<-A"}
    for channel in summary.values():
        assert channel.draws.shape == (7,)
        assert channel.interval[0] <= channel.strength <= channel.interval[1]
        assert channel.time_course.shape == (3, 15)
        assert (channel.time_course[1] <= channel.time_course[0] + 1e-12).all()
    # The posterior knows the model's time per bin and scales by it.
    unscaled = communication_summary(multi_area_posterior, bin_time=1.0)
    step = multi_area_posterior.attrs["step_size"]
    assert np.isclose(summary["B<-A"].strength, unscaled["B<-A"].strength * step)
    with pytest.raises(ValueError, match="no communication sites"):
        communication_summary({"latents": np.zeros((2, 3, 4, 2))})


def test_the_communication_sites_alone_give_the_same_summary():
    # what `pyrodyn fit` draws for communication.json: no rates or predictive counts
    pyro.set_rng_seed(0)
    data = synthetic.two_area(n_trials=6, n_bins=15, n_neurons=5, seed=0)
    model = MultiAreaModel.from_data(data, 2, hidden=16)
    guide = build_guide("normal", model, hidden=8)
    lean = posterior(model, guide, data, num_samples=7, batch_size=4,
                     names=communication_sites(model))
    assert set(lean.draws) == {"comm.A<-B", "comm.B<-A", "latents.A", "latents.B"}
    whole = communication_summary(posterior(model, guide, data, num_samples=7, batch_size=4))
    for name, channel in communication_summary(lean).items():
        np.testing.assert_allclose(channel.draws, whole[name].draws, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter")
def test_multi_area_inference_data_round_trips(multi_area_posterior, tmp_path):
    post = multi_area_posterior
    assert post.draws["spikes"].shape == (7, 6, 15, 10)
    assert post.draws["log_likelihood"].shape == (7, 6, 15, 10)
    idata = post.to_inference_data(elbo="Trace_ELBO")
    posterior_vars = set(idata.posterior.data_vars)
    assert {"z0.A", "z0.B", "latents.A", "latents.B", "comm.A<-B", "comm.B<-A", "latents",
            "rates"} <= posterior_vars
    assert idata.posterior["comm.B<-A"].dims == ("chain", "draw", "trial", "time", "latent_B")
    assert idata.posterior["latents.B"].dims == ("chain", "draw", "trial", "time", "latent_B")
    assert list(idata.posterior["latents"].latent.values) == ["A0", "A1", "B0", "B1"]
    assert list(np.unique(idata.posterior_predictive.area.values)) == ["A", "B"]
    path = tmp_path / "multi.nc"
    idata.to_netcdf(path)
    back = az.from_netcdf(path)
    xr.testing.assert_equal(back.posterior, idata.posterior)
    assert np.isfinite(az.loo(idata).elpd_loo)


def test_plots_draw(multi_area_posterior, tmp_path):
    summary = communication_summary(multi_area_posterior)
    plots.plot_area_graph(summary, true={"B<-A": 0.03}).savefig(tmp_path / "graph.png")
    plots.plot_communication(np.arange(15) * 0.01, summary).savefig(tmp_path / "course.png")
    assert (tmp_path / "graph.png").stat().st_size > 1000


def test_a_phase_locked_direction_is_flagged_as_not_identified():
    from pyrodyn.analysis.communication import IDENTIFIED_BELOW, source_from_target_r2

    def r2s(data):
        z = data.truth.latents
        ctx, str_ = z[..., :2], z[..., 2:]
        return source_from_target_r2(ctx, str_), source_from_target_r2(str_, ctx)

    # str's history holds ctx's phase, but its present state (1-d) does not: with transients
    # each area's state is not a function of the other's
    free = r2s(synthetic.driven_pair(n_trials=60, n_bins=50, n_neurons=4, seed=0))
    assert free[1] < IDENTIFIED_BELOW  # ctx from str: str<-ctx is identified
    locked = r2s(synthetic.phase_locked_pair(n_trials=60, n_bins=50, n_neurons=4, seed=0))
    assert locked[0] > IDENTIFIED_BELOW  # on the locked orbit str is a function of ctx
    # and one direction of ctx (in phase with str) a function of str: str's own field can
    # take the channel's part along it, so str<-ctx's strength is not pinned either
    assert locked[1] > IDENTIFIED_BELOW


def test_the_best_predicted_direction_decides_and_is_affine_invariant():
    from pyrodyn.analysis.communication import source_from_target_r2

    rng = np.random.default_rng(0)
    target = rng.normal(size=(40, 30, 1))
    # the source's first direction is the target's state, the second independent noise
    source = np.concatenate([np.tanh(target), rng.normal(size=(40, 30, 1))], -1)
    r2 = source_from_target_r2(target, source)
    assert r2 > 0.9            # the mean over the source's dimensions would be about 0.5
    mixed = source @ np.array([[2.0, 1.0], [-1.0, 3.0]]) + 5.0
    assert abs(source_from_target_r2(target, mixed) - r2) < 1e-6
