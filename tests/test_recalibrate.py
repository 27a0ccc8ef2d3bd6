"""recompute_bn_statistics: equal to torch.optim.swa_utils.update_bn on the same batches, for
torch's and bnlib's layers; modes, momenta and parameters restored; clear errors before any work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from bnlib import MNIST, build_cnn, build_mlp
from bnlib.data import contrast
from bnlib.inference.recalibrate import (
    average_bn_statistics,
    batch_norm_layers,
    recompute_bn_statistics,
)
from bnlib.nn import BatchNorm1d, GhostBatchNorm

BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}
TOL = {"rtol": 1e-12, "atol": 1e-12}


def images(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, 28, 28, generator=generator, dtype=torch.float64)


def trained_statistics(model: nn.Module) -> nn.Module:
    """Give the model non-default running statistics, as training would."""
    model.train()
    with torch.no_grad():
        for batch in images(96, seed=1).split(32):
            model(batch * 2 - 0.3)
    return model


def running_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()
            if key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


@pytest.mark.parametrize("arch", BUILDERS)
def test_equals_update_bn_on_torch_layers(arch):
    model = trained_statistics(BUILDERS[arch](norm="torch", seed=0).double()).eval()
    reference = copy.deepcopy(model)
    batches = list(images(200).split(48))  # the last batch is smaller
    recompute_bn_statistics(model, batches)
    update_bn(batches, reference)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert all(layer.num_batches_tracked == len(batches) for layer in batch_norm_layers(model))


@pytest.mark.parametrize("arch", BUILDERS)
def test_bnlib_layers_match_update_bn_on_torch_copy(arch):
    ours = trained_statistics(BUILDERS[arch](norm="bnlib", seed=0).double())
    theirs = BUILDERS[arch](norm="torch", seed=0).double()
    theirs.load_state_dict(ours.state_dict())
    batches = list(images(150).split(40))
    recompute_bn_statistics(ours, batches)
    update_bn(batches, theirs)
    mine = ours.state_dict()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(mine[key], value, **TOL)


def test_mnist_tensor_and_loader_batches_agree():
    data = MNIST(images=images(101).float(), labels=torch.zeros(101, dtype=torch.long))
    from_mnist = recompute_bn_statistics(build_mlp(norm="bnlib", seed=0), data, batch_size=25)
    from_tensor = recompute_bn_statistics(build_mlp(norm="bnlib", seed=0), data.images,
                                          batch_size=25)
    # 101 = 4 * 25 + 1: the final batch of one is dropped; (inputs, labels) pairs use inputs
    pairs = [(data.images[start:start + 25], data.labels[start:start + 25])
             for start in range(0, 100, 25)]
    from_pairs = recompute_bn_statistics(build_mlp(norm="bnlib", seed=0), pairs)
    for model in (from_mnist, from_tensor):
        for key, value in running_state(from_pairs).items():
            assert torch.equal(running_state(model)[key], value), key
    assert all(layer.num_batches_tracked == 4 for layer in batch_norm_layers(from_pairs))


def test_running_mean_is_the_plain_average_of_batch_means():
    layer = BatchNorm1d(3).double()
    model = nn.Sequential(layer)
    batches = [torch.randn(n, 3, dtype=torch.float64) * 2 + 1 for n in (5, 9, 4)]
    recompute_bn_statistics(model, batches)
    means = torch.stack([batch.mean(0) for batch in batches]).mean(0)
    variances = torch.stack([batch.var(0) for batch in batches]).mean(0)  # unbiased
    torch.testing.assert_close(layer.running_mean, means, **TOL)
    torch.testing.assert_close(layer.running_var, variances, **TOL)


def test_restores_each_module_mode_momentum_and_parameters():
    model = trained_statistics(build_mlp(norm="bnlib", seed=0).double())
    model.train()
    model[2].eval()  # one BN frozen in eval inside a training model, as in fine-tuning
    model[5].momentum = 0.3
    parameters = copy.deepcopy(list(model.parameters()))
    modes = [module.training for module in model.modules()]
    recompute_bn_statistics(model, images(64))
    assert [module.training for module in model.modules()] == modes
    assert model[2].momentum == 0.1 and model[5].momentum == 0.3
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), parameters))
    assert all(param.grad is None for param in model.parameters())


def test_affine_pixel_shift_is_undone_by_the_first_layer():
    """AdaBN: x -> a x + b (a > 0) shifts every first-layer pre-activation affinely, so the first
    BN with recomputed statistics gives (nearly: eps) the same outputs as on the original data."""
    data = MNIST(images=images(512).float(), labels=torch.zeros(512, dtype=torch.long))
    model = build_mlp(norm="bnlib", seed=0)
    shifted_model = copy.deepcopy(model)
    recompute_bn_statistics(model, data).eval()
    shifted = contrast(data, 0.5)
    recompute_bn_statistics(shifted_model, shifted).eval()
    with torch.no_grad():
        original_out = model[:3](data.images[:64])
        shifted_out = shifted_model[:3](shifted.images[:64])
        stale_out = model[:3](shifted.images[:64])
    assert (shifted_out - original_out).abs().max() < 1e-2
    assert (stale_out - original_out).abs().max() > 0.5


def test_skips_layers_without_running_statistics_and_other_norms():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8),
                          nn.BatchNorm1d(8, track_running_stats=False), nn.LayerNorm(8),
                          nn.Unflatten(1, (8, 1)), nn.GroupNorm(2, 8),
                          GhostBatchNorm(8, 4)).double()
    assert batch_norm_layers(model) == [model[2], model[7]]
    recompute_bn_statistics(model, images(40), batch_size=20)
    assert model[2].num_batches_tracked == 2
    assert model[7].num_batches_tracked == 10  # ghost BN counts its 5 virtual batches per batch


@pytest.mark.parametrize("mixed", [False, True])
def test_batch_renorm_is_refused_by_name_before_anything_changes(mixed):
    """A plain average does not give batch renormalisation's statistics (bnlib.nn.registry says
    why): batch_norm_layers leaves it out and recompute_bn_statistics refuses it by name, also
    in a model whose other layers it could recompute."""
    model = build_mlp(norm="batchrenorm", seed=0).double()
    if mixed:
        model[2] = BatchNorm1d(32).double()
    trained_statistics(model).eval()
    before = copy.deepcopy(model.state_dict())
    assert batch_norm_layers(model) == ([model[2]] if mixed else [])
    first = "5" if mixed else "2"
    with pytest.raises(ValueError, match=rf"module '{first}' is a BatchRenorm1d.*averages the "
                                         r"batch standard deviations.*nothing was changed"):
        recompute_bn_statistics(model, images(64), batch_size=32)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_no_batch_norm_is_an_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.GroupNorm(2, 8))
    with pytest.raises(ValueError, match="no BatchNorm layer with running statistics"):
        recompute_bn_statistics(model, images(8))
    untracked = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(784, track_running_stats=False))
    with pytest.raises(ValueError, match="nothing to recompute"):
        recompute_bn_statistics(untracked, images(8))


@pytest.mark.parametrize("empty", [[], iter(()), images(1), torch.empty(0, 1, 28, 28)])
def test_empty_data_is_an_error_and_changes_nothing(empty):
    model = trained_statistics(build_mlp(norm="bnlib", seed=0).double())
    before = running_state(model)
    with pytest.raises(ValueError, match="holds no batch"):
        recompute_bn_statistics(model, empty)
    assert all(torch.equal(running_state(model)[key], value) for key, value in before.items())


@pytest.mark.parametrize("batch_size", [1, 0, True, 2.5])
def test_batch_size_must_be_at_least_two(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an int >= 2"):
        recompute_bn_statistics(build_mlp(norm="bnlib", seed=0), images(8), batch_size=batch_size)


def test_data_of_wrong_type_is_an_error():
    with pytest.raises(TypeError, match="iterable of batches"):
        recompute_bn_statistics(build_mlp(norm="bnlib", seed=0), 3.0)


def test_failed_pass_restores_statistics_mode_and_momentum():
    model = trained_statistics(build_mlp(norm="bnlib", seed=0).double()).eval()
    before = running_state(model)
    batches = [images(8), torch.zeros(8, 5, dtype=torch.float64)]  # the second has a wrong shape
    with pytest.raises(RuntimeError):
        recompute_bn_statistics(model, batches)
    assert all(torch.equal(running_state(model)[key], value) for key, value in before.items())
    assert not any(module.training for module in model.modules())
    assert all(layer.momentum == 0.1 for layer in batch_norm_layers(model))


def test_average_bn_statistics_leaves_restoring_to_the_caller():
    model = build_mlp(norm="bnlib", seed=0).double().eval()
    layers = batch_norm_layers(model)
    batches = list(images(60).split(20))
    average_bn_statistics(model, layers, batches)
    assert model.training and all(layer.momentum is None for layer in layers)
    reference = build_mlp(norm="bnlib", seed=0).double()
    recompute_bn_statistics(reference, batches)
    for key, value in running_state(reference).items():
        assert torch.equal(running_state(model)[key], value), key
