import numpy as np
import pytest
import torch

# Small tensors on 2 cores: one thread is faster and makes timings repeatable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_param_store():
    """Pyro's default (global) mode keeps parameters by name across models, as in any Pyro
    program: every test starts from an empty store, as a user's script would."""
    import pyro

    pyro.clear_param_store()
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def counts(rng):
    return rng.poisson(1.5, (6, 10, 5))


def _check_contract(model, guide, kwargs, elbos):
    """The model/guide contract of DESIGN.md, for any model: finite ELBOs, the same latent sites
    with the same shapes on both sides, a gradient for every parameter, vectorized particles.
    Returns (latent site names, replayed model trace) for model-specific checks."""
    import pyro.poutine as poutine
    from pyro.infer import Trace_ELBO
    from pyro.poutine.util import site_is_subsample

    for elbo in elbos:
        assert torch.isfinite(elbo.differentiable_loss(model, guide, **kwargs))
    guide_trace = poutine.trace(guide).get_trace(**kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**kwargs)
    latent = {n for n, s in model_trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}
    guided = {n for n, s in guide_trace.nodes.items() if s["type"] == "sample"
              and not site_is_subsample(s) and not s["infer"].get("is_auxiliary")}
    assert latent == guided
    for name in latent:
        assert guide_trace.nodes[name]["value"].shape == model_trace.nodes[name]["value"].shape
    model.zero_grad()
    guide.zero_grad()
    Trace_ELBO().differentiable_loss(model, guide, **kwargs).backward()
    for owner, module in (("model", model), ("guide", guide)):
        for name, param in module.named_parameters():
            assert param.grad is not None, f"{owner}.{name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{owner}.{name} has a non-finite gradient"
    # Vectorized particles: proof that the plates are right.
    vectorized = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    assert torch.isfinite(vectorized.differentiable_loss(model, guide, **kwargs))
    return latent, model_trace


@pytest.fixture
def check_contract():
    return _check_contract


@pytest.fixture
def interrupt_fit(monkeypatch):
    """``interrupt_fit(step, action)``: ``fit`` calls ``action()`` as it draws the batch of
    ``step`` (an interruption mid-run); returns a function that removes it again."""
    from pyrodyn.inference import svi

    original = svi._batch_indices

    def install(step, action):
        def patched(n_trials, batch_size, seed, at):
            if at == step:
                action()
            return original(n_trials, batch_size, seed, at)

        monkeypatch.setattr(svi, "_batch_indices", patched)
        return lambda: monkeypatch.setattr(svi, "_batch_indices", original)

    return install
