"""bnlib's batch norm under torch.func transforms (vmap, grad, jacrev), against torch's layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap

import bnlib
from bnlib.nn import batch_norm

SHAPES = [(16, 4), (8, 4, 3), (5, 4, 3, 2)]
MODES = ["manual", "autograd"]


def ours(mode):
    def normalise(x, weight, bias):
        return batch_norm(x, None, None, weight, bias, True, backward=mode)
    return normalise


def theirs(x, weight, bias):
    return F.batch_norm(x, None, None, weight, bias, True)


def cube_sum(norm):
    """A loss whose gradient is not a constant, so that mistakes cannot cancel."""
    return lambda x, weight, bias: (norm(x, weight, bias) ** 3).sum()


def case(shape, batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    def draw(*size):
        return torch.randn(*size, generator=generator, dtype=torch.float64)
    x = draw(batch, *shape) * 2 + 0.5
    return x, draw(shape[1]).abs() + 0.5, draw(shape[1]), draw(batch, shape[1]).abs() + 0.5


# Each transform takes the normalising function and the case, and returns tensors to compare.
TRANSFORMS = {
    "vmap over the input": lambda f, x, w, b, ws: vmap(f, in_dims=(0, None, None))(x, w, b),
    "vmap over input and weight": lambda f, x, w, b, ws: vmap(f, in_dims=(0, 0, None))(x, ws, b),
    "vmap over the weight only": lambda f, x, w, b, ws: vmap(f, in_dims=(None, 0, None))(
        x[0], ws, b),
    "vmap over dim 1": lambda f, x, w, b, ws: vmap(f, in_dims=(1, None, None))(
        x.movedim(0, 1), w, b),
    "vmap over the last dim": lambda f, x, w, b, ws: vmap(f, in_dims=(-1, None, None))(
        x.movedim(0, -1), w, b),
    "grad": lambda f, x, w, b, ws: grad(cube_sum(f), argnums=(0, 1, 2))(x[0], w, b),
    "jacrev": lambda f, x, w, b, ws: jacrev(f, argnums=(0, 1, 2))(x[0], w, b),
    "vmap of grad": lambda f, x, w, b, ws: vmap(grad(cube_sum(f), argnums=(0, 1)),
                                                in_dims=(0, None, None))(x, w, b),
    "vmap of jacrev": lambda f, x, w, b, ws: vmap(jacrev(f), in_dims=(0, None, None))(x, w, b),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_transforms_match_torch(shape, mode, transform):
    x, weight, bias, weights = case(shape)
    apply = TRANSFORMS[transform]
    torch.testing.assert_close(apply(ours(mode), x, weight, bias, weights),
                               apply(theirs, x, weight, bias, weights))


def test_vmap_of_module_without_running_stats():
    x = torch.randn(3, 16, 4, dtype=torch.float64)
    layer = bnlib.BatchNorm1d(4, track_running_stats=False).double()
    reference = torch.nn.BatchNorm1d(4, track_running_stats=False).double()
    out = vmap(layer)(x)
    torch.testing.assert_close(out, vmap(reference)(x))
    torch.testing.assert_close(out, torch.stack([layer(sample) for sample in x]))


def test_vmap_in_eval_mode_uses_the_running_stats():
    layer = bnlib.BatchNorm2d(3).double()
    layer(torch.randn(8, 3, 2, 2, dtype=torch.float64) * 2 + 1)
    reference = torch.nn.BatchNorm2d(3).double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(4, 5, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(vmap(layer.eval())(x), vmap(reference.eval())(x))


def test_per_sample_parameter_gradients_match_torch():
    """The usual functional_call + vmap(grad) recipe, with one loss per example."""
    layer = bnlib.BatchNorm1d(4, track_running_stats=False).double()
    reference = torch.nn.BatchNorm1d(4, track_running_stats=False).double()
    x = torch.randn(5, 6, 4, dtype=torch.float64)  # 5 groups of 6 examples: BN within a group

    def per_group(module):
        params = dict(module.named_parameters())
        def loss(p, group):
            return (functional_call(module, p, (group,)) ** 3).sum()

        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    torch.testing.assert_close(per_group(layer), per_group(reference))


@pytest.mark.parametrize("mode", MODES)
def test_normal_autograd_and_gradcheck_still_work(mode):
    x, weight, bias, _ = case((6, 3))
    leaves = [t.clone().requires_grad_() for t in (x[0], weight, bias)]
    assert torch.autograd.gradcheck(ours(mode), leaves)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("layer", [torch.nn.BatchNorm1d(4), bnlib.BatchNorm1d(4)],
                         ids=["torch", "bnlib"])
def test_running_stats_cannot_be_updated_under_vmap_as_in_torch(layer):
    """One set of running statistics cannot take B batches' updates: both layers refuse."""
    with pytest.raises(RuntimeError):
        vmap(layer)(torch.randn(3, 16, 4))
