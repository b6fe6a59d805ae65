import numpy as np
import pytest
import torch

# Small tensors on 2 cores: one thread is faster and makes timings repeatable.
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def counts(rng):
    return rng.poisson(1.5, (6, 10, 5))
