import pytest
import torch

from pyrodyn.config import RunConfig


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("latent_dim: 4\nreadout: affine\nlr: 5e-3\n")
    config = RunConfig.from_sources(path, ["readout=flow", "weight_decay=1e-4", "steps=300"])
    assert (config.latent_dim, config.readout, config.steps) == (4, "flow", 300)
    # YAML 1.1 reads 5e-3 and 1e-4 (no dot) as strings: they must still be numbers.
    assert config.lr == 5e-3 and isinstance(config.lr, float)
    assert config.weight_decay == 1e-4 and isinstance(config.weight_decay, float)
    assert RunConfig.from_sources(overrides=["time_budget=null"]).time_budget is None
    assert RunConfig().readout == "plane"   # the default readout (README, benchmark (f))


@pytest.mark.parametrize("item, message", [
    ("lr=fast", "lr must be a number"),
    ("steps=1.5", "steps must be a whole number"),
    ("colour=red", "unknown option"),
    ("steps", "expected key=value"),
])
def test_bad_options_are_one_clear_error(item, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_sources(overrides=[item])


def test_the_recipe_has_a_stochastic_path_and_null_gives_the_ode_back():
    from pyrodyn.config import build_run
    from pyrodyn.data import synthetic

    data = synthetic.lorenz(n_trials=4, n_bins=10, n_neurons=6, seed=0)
    model, guide = build_run(RunConfig(), data)
    assert model.path_sites and guide.path_sites  # README, benchmark (g)
    ode, _ = build_run(RunConfig.from_sources(overrides=["diffusion=null"]), data)
    assert ode.path_sites == {} and ode.diffusion is None
    with pytest.raises(ValueError, match="diffusion=null"):
        build_run(RunConfig.from_sources(overrides=["inferred_input_dim=2"]), data)
    inputs, _ = build_run(RunConfig.from_sources(
        overrides=["inferred_input_dim=2", "diffusion=null"]), data)
    assert inputs.input_sites
    assert model.noise_correlation() is not None  # correlated path noise (README (g)),
    assert "log_tau" in dict(model.diffusion.named_parameters())  # its correlation time learned
    fixed, _ = build_run(RunConfig.from_sources(overrides=["learn_noise_tau=false"]), data)
    assert "log_tau" in dict(fixed.diffusion.named_buffers())
    with pytest.raises(ValueError, match="learn_noise_tau"):
        RunConfig(learn_noise_tau="yes")
    white, _ = build_run(RunConfig.from_sources(overrides=["noise_tau=null"]), data)
    assert white.noise_correlation() is None
    assert model.noise_df() is None  # Gaussian innovations; Student-t where asked
    student, _ = build_run(RunConfig.from_sources(overrides=["noise_df=4"]), data)
    assert "log_df" in dict(student.diffusion.named_parameters())
    assert model.readout.link is not None  # a monotone link per neuron (README (f))
    unlinked, _ = build_run(RunConfig.from_sources(overrides=["readout_link=identity"]), data)
    assert unlinked.readout.link is None
    with pytest.raises(ValueError, match="readout_link must be one of identity, monotone"):
        RunConfig(readout_link="tanh")


def test_a_saved_run_rebuilds_the_model_it_was_fitted_with(tmp_path):
    """A run saved before an option existed gets the value its fit had, not today's default."""
    import yaml

    saved = RunConfig().to_dict()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).noise_tau == RunConfig().noise_tau
    saved["learn_noise_tau"] = False
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).learn_noise_tau is False
    del saved["learn_noise_tau"]  # a run from before the correlation time could be fixed
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).learn_noise_tau is True
    del saved["noise_tau"]  # a run from before correlated path noise: white noise
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).noise_tau is None
    saved["noise_df"] = 4.0
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).noise_df == 4.0
    del saved["noise_df"]  # a run from before Student-t path noise: Gaussian innovations
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).noise_df is None
    del saved["readout_link"]  # a run from before the plane readout's link
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).readout_link == "identity"
    del saved["parameter_prior"]  # a run from before the weights' Laplace posterior
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).parameter_prior is None
    del saved["diffusion_prior"]  # a run from before the prior on the path's noise
    path.write_text(yaml.safe_dump(saved))
    assert RunConfig.from_run(path).diffusion_prior == 0.0


def test_auto_priors_give_one_area_models_a_readout_posterior_and_a_quieter_path():
    from pyrodyn.config import attach_parameter_posterior, build_run
    from pyrodyn.data import synthetic

    one = synthetic.lorenz(n_trials=4, n_bins=10, n_neurons=6, seed=0)
    two = synthetic.two_area(n_trials=4, n_bins=10, n_neurons=4, seed=0)
    config = RunConfig()
    assert config.parameter_prior == "auto"
    model, guide = build_run(config, one)
    assert config.parameter_prior_for(model) == 1.0
    laplace = attach_parameter_posterior(config, model, guide, one)
    assert model.parameter_posterior is laplace and set(laplace.readouts) == {"readout"}
    areas, area_guide = build_run(RunConfig(model="multi_area", latent_dim=2), two)
    assert attach_parameter_posterior(RunConfig(), areas, area_guide, two) is None
    assert areas.parameter_posterior is None  # its channels get the scale posterior instead
    assert RunConfig(parameter_prior=2).parameter_prior_for(areas) == 2
    assert config.parameter_prior_for(torch.nn.Linear(2, 2)) is None  # a user's own program
    unset, _ = build_run(RunConfig(parameter_prior=None), one)
    assert RunConfig(parameter_prior=None).parameter_prior_for(unset) is None
    for bad in ("always", 0):
        with pytest.raises(ValueError, match="parameter_prior"):
            RunConfig(parameter_prior=bad)

    # diffusion_prior "auto": no prior on the path's noise, whatever the model (README (g), "No
    # prior on the path's noise by default": 300 squashed the flip-flop's sigma)
    assert config.diffusion_prior == "auto" and model.diffusion.prior_rate == 0
    assert areas.diffusion.prior_rate == 0
    assert unset.diffusion.prior_rate == 0
    ode, _ = build_run(RunConfig(diffusion=None), one)  # no path, no prior on its noise
    assert ode.diffusion is None
    chosen, _ = build_run(RunConfig(diffusion_prior=5), one)
    assert chosen.diffusion.prior_rate == 5
    with pytest.raises(ValueError, match="diffusion_prior must be a number or auto"):
        RunConfig(diffusion_prior="some")
