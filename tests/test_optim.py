"""Tests for bnlib.engine.make_optimizer: torch's own optimizers, fused where torch has a kernel."""

from __future__ import annotations

import pytest
import torch

import bnlib.engine.optim
from bnlib.engine import make_optimizer
from bnlib.models import build_mlp


@pytest.mark.parametrize("name, kind", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_a_model_or_its_parameters_give_torchs_fused_optimizer(name, kind):
    model = build_mlp(seed=0)
    for params in (model, model.parameters(), list(model.parameters())):
        optimizer = make_optimizer(params, name, lr=0.1, momentum=0.0)
        assert type(optimizer) is kind
        group = optimizer.param_groups[0]
        assert group["fused"] and group["lr"] == 0.1
        assert group["params"] == list(model.parameters())


def test_sgd_gets_the_momentum_and_complex_parameters_no_fused_kernel():
    optimizer = make_optimizer(build_mlp(seed=0), "sgd", lr=0.1, momentum=0.9)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    weight = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    assert not make_optimizer([weight], "sgd", lr=0.1).param_groups[0]["fused"]


def test_a_step_is_torchs_own_step():
    """No bypass of optimizer.step(): the update is what a plain torch.optim.Adam does."""
    assert not hasattr(bnlib.engine.optim, "lean_step")
    models = [build_mlp(seed=0) for _ in range(2)]
    optimizers = [make_optimizer(models[0], "adam", lr=0.01),
                  torch.optim.Adam(models[1].parameters(), lr=0.01, fused=True)]
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd', got 'rmsprop'"):
        make_optimizer(build_mlp(seed=0), "rmsprop", lr=0.1)
