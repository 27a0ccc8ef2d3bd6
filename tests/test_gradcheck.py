"""bnlib.by_hand.gradcheck: the finite-difference checker and the relative error."""

from __future__ import annotations

import pytest
import torch

from bnlib.by_hand import numerical_gradient, relative_error
from bnlib.nn import BatchNorm2d, batch_norm


def test_numerical_gradient_of_a_known_function():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    dy = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    grad = numerical_gradient(lambda t: t**3, x, dy)
    torch.testing.assert_close(grad, 3 * x**2 * dy, rtol=1e-8, atol=1e-8)


def test_caller_tensor_is_left_untouched():
    base = torch.randn(4, 6, dtype=torch.float64)
    x = base.t()  # non-contiguous on purpose
    before, version = x.clone(), x._version
    seen = []
    numerical_gradient(lambda t: seen.append(t is x) or t.sin(), x, torch.ones(6, 4, dtype=x.dtype))
    assert torch.equal(x, before) and x._version == version
    assert not any(seen)


def test_gradient_has_the_shape_and_dtype_of_x():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    grad = numerical_gradient(lambda t: t.sum(dim=1), x, torch.ones(2, 4, dtype=torch.float64))
    assert grad.shape == x.shape and grad.dtype == x.dtype
    torch.testing.assert_close(grad, torch.ones_like(x))


@pytest.mark.parametrize("backward", ["manual", "autograd"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (3, 2, 2, 2)])
def test_finite_differences_agree_with_autograd_on_batch_norm(backward, shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    weight = torch.randn(shape[1], generator=generator, dtype=torch.float64)
    bias = torch.randn(shape[1], generator=generator, dtype=torch.float64)
    dy = torch.randn(shape, generator=generator, dtype=torch.float64)

    def normalise(t):
        return batch_norm(t, None, None, weight, bias, training=True, backward=backward)

    leaf = x.clone().requires_grad_()
    normalise(leaf).backward(dy)
    assert relative_error(numerical_gradient(normalise, x, dy), leaf.grad) < 1e-6


def test_checker_works_on_a_module_in_training_mode():
    layer = BatchNorm2d(2).double()
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    dy = torch.randn_like(x)
    leaf = x.clone().requires_grad_()
    layer(leaf).backward(dy)
    assert relative_error(numerical_gradient(layer, x, dy), leaf.grad) < 1e-6


def test_checker_detects_a_wrong_gradient():
    x = torch.randn(3, 4, dtype=torch.float64)
    dy = torch.randn_like(x)
    wrong = 2 * x * dy * 1.01  # one percent off the true gradient of x**2
    assert relative_error(numerical_gradient(torch.square, x, dy), wrong) > 1e-3


def test_non_positive_step_is_rejected():
    with pytest.raises(ValueError, match=r"h must be a positive step size, got 0"):
        numerical_gradient(torch.sin, torch.zeros(2), torch.ones(2), h=0)


def test_relative_error_values():
    a = torch.tensor([1.0, 2.0, 0.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_error(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0])) == pytest.approx(0.5)
    assert relative_error(torch.tensor([1.0]), torch.tensor([-1.0])) == pytest.approx(1.0)
    b = torch.tensor([1.5, 2.0, 1e-3])
    assert relative_error(a, b) == relative_error(b, a)
    assert isinstance(relative_error(a, b), float)
