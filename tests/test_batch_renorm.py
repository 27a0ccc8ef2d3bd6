"""Batch renormalisation: BN at r_max=1, d_max=0; the paper's corrections, clipping,
stop-gradient and running statistics otherwise; BN's state dict and evaluation."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlib import BatchNorm1d, BatchRenorm1d, BatchRenorm2d, RenormSchedule, build_cnn, build_mlp

# (our class, torch's BN class, input shape)
LAYOUTS = [
    (BatchRenorm1d, nn.BatchNorm1d, (6, 3)),
    (BatchRenorm1d, nn.BatchNorm1d, (5, 3, 4)),
    (BatchRenorm2d, nn.BatchNorm2d, (4, 3, 3, 2)),
]
LAYOUT_IDS = ["1d-NC", "1d-NCL", "2d-NCHW"]
AFFINE = [(True, True), (True, False), (False, True)]
AFFINE_IDS = ["affine", "affine-nobias", "plain"]


def random_parameters(layer):
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.uniform_(0.5, 1.5)
    return layer


def batches(shape, count, seed=1):
    """Batches whose statistics drift, so the running ones lag behind them."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) * (k + 1) + 2 * k
            for k in range(count)]


def corrected_reference(layer, x):
    """Training output by the formula: BN with weight gamma * r and bias gamma * d + beta, r and d
    computed by hand from the layer's running statistics and clipped; r, d constants."""
    dims = [0] + list(range(2, x.dim()))
    mean, var = x.mean(dims).detach(), x.var(dims, unbiased=False).detach()
    std, running_std = torch.sqrt(var + layer.eps), torch.sqrt(layer.running_var + layer.eps)
    r = torch.clamp(std / running_std, 1 / layer.r_max, layer.r_max)
    d = torch.clamp((mean - layer.running_mean) / running_std, -layer.d_max, layer.d_max)
    gamma = layer.weight if layer.weight is not None else torch.ones_like(r)
    beta = layer.bias if layer.bias is not None else torch.zeros_like(r)
    return F.batch_norm(x, None, None, gamma * r, gamma * d + beta, True, 0.0, layer.eps), r, d


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("affine", "bias"), AFFINE, ids=AFFINE_IDS)
def test_with_r_max_1_and_d_max_0_training_is_torch_bn(ours_cls, torch_cls, shape, affine, bias):
    theirs = random_parameters(torch_cls(3, affine=affine, bias=bias).double())
    ours = ours_cls(3, affine=affine, bias=bias, r_max=1.0, d_max=0.0).double()
    ours.load_state_dict(theirs.state_dict())
    dy = torch.randn(shape, dtype=torch.float64)
    for x in batches(shape, 4):
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, ref = ours(x_ours), theirs(x_theirs)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        out.backward(dy), ref.backward(dy)
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-10, atol=1e-10)
        for mine, reference in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-10, atol=1e-10)
            mine.grad, reference.grad = None, None


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("r_max", "d_max"), [(1.5, 0.5), (3.0, 5.0), (1.1, 0.0)])
@pytest.mark.parametrize(("affine", "bias"), AFFINE, ids=AFFINE_IDS)
def test_forward_and_backward_are_the_formula_with_r_and_d_constant(ours_cls, torch_cls, shape,
                                                                    r_max, d_max, affine, bias):
    layer = random_parameters(ours_cls(3, affine=affine, bias=bias, r_max=r_max,
                                       d_max=d_max).double())
    dy = torch.randn(shape, dtype=torch.float64)
    for x in batches(shape, 3):
        x = x.requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        expected, _, _ = corrected_reference(layer, x_ref)
        out = layer(x)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        params = list(layer.parameters())
        grads = torch.autograd.grad(out, [x] + params, dy)
        expected_grads = torch.autograd.grad(expected, [x_ref] + params, dy)
        for mine, reference in zip(grads, expected_grads):
            torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-10)


def test_r_and_d_are_clipped_to_their_bounds():
    layer = BatchRenorm1d(2, affine=False, r_max=2.0, d_max=0.5).double()
    # std 10 and mean 7 against running std ~1 and mean 0: r and d hit their upper bounds
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, dtype=torch.float64, generator=generator) * 10 + 7
    _, r, d = corrected_reference(layer, x)
    assert torch.equal(r, torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.equal(d, torch.full((2,), 0.5, dtype=torch.float64))
    x_hat = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + layer.eps)
    torch.testing.assert_close(layer(x), x_hat * 2.0 + 0.5)
    layer.running_var.fill_(1600.0 - layer.eps)  # running std 40: r hits its lower bound
    layer.running_mean.fill_(100.0)
    _, r, d = corrected_reference(layer, x)
    assert torch.equal(r, torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.equal(d, torch.full((2,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(layer(x), x_hat * 0.5 - 0.5)


def test_unclipped_training_output_is_the_eval_output_but_the_gradient_is_not():
    trained = random_parameters(BatchRenorm2d(3).double())
    for x in batches((4, 3, 2, 2), 3):
        trained(x)
    training = BatchRenorm2d(3, r_max=1e6, d_max=1e6).double()
    evaluating = BatchRenorm2d(3).double().eval()
    for layer in (training, evaluating):
        layer.load_state_dict(trained.state_dict())
    x = batches((8, 3, 2, 2), 1, seed=5)[0].requires_grad_()
    x_eval = x.detach().clone().requires_grad_()
    train_out, eval_out = training(x), evaluating(x_eval)
    torch.testing.assert_close(train_out, eval_out, rtol=1e-9, atol=1e-9)
    dy = torch.randn(x.shape, dtype=torch.float64)
    grad_train, = torch.autograd.grad(train_out, x, dy)
    grad_eval, = torch.autograd.grad(eval_out, x_eval, dy)
    # With r and d constant, the batch mean and std still carry gradient: not the eval map's.
    assert (grad_train - grad_eval).abs().max() > 1e-3


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_statistics_average_the_mean_and_the_standard_deviation(momentum):
    layer = BatchRenorm1d(3, momentum=momentum).double()
    eps, mean, std = layer.eps, torch.zeros(3, dtype=torch.float64), None
    std = torch.sqrt(torch.ones(3, dtype=torch.float64) + eps)
    for step, x in enumerate(batches((10, 3), 4), start=1):
        layer(x)
        factor = 1.0 / step if momentum is None else momentum
        mean = mean + factor * (x.mean(0) - mean)
        std = std + factor * (torch.sqrt(x.var(0, unbiased=False) + eps) - std)
        torch.testing.assert_close(layer.running_mean, mean)
        torch.testing.assert_close(torch.sqrt(layer.running_var + eps), std)
    assert int(layer.num_batches_tracked) == 4


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_state_dict_is_bn_and_eval_mode_is_bn_eval(ours_cls, torch_cls, shape):
    ours = random_parameters(ours_cls(3).double())
    for x in batches(shape, 3):
        ours(x)
    theirs = torch_cls(3).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, ref = ours(x), theirs(x_ref)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(shape, dtype=torch.float64)
    out.backward(dy), ref.backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad)
    buffers = {name: b.clone() for name, b in ours.named_buffers()}
    ours(x)
    assert all(torch.equal(b, buffers[name]) for name, b in ours.named_buffers())
    ours.load_state_dict(torch_cls(3).double().state_dict(), strict=True)
    assert ours.state_dict()._metadata[""] == theirs.state_dict()._metadata[""]


def test_without_running_statistics_it_is_bn():
    ours = BatchRenorm2d(3, track_running_stats=False).double()
    theirs = nn.BatchNorm2d(3, track_running_stats=False).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(ours(x), theirs(x))
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))


def test_repr_and_constructor_extend_bn_with_r_max_and_d_max():
    layer = BatchRenorm2d(4, 1e-3, 0.2, r_max=2.0, d_max=1.0)
    assert repr(layer) == ("BatchRenorm2d(4, eps=0.001, momentum=0.2, affine=True, bias=True, "
                           "track_running_stats=True, r_max=2.0, d_max=1.0)")
    names = [p.name for p in inspect.signature(BatchRenorm1d.__init__).parameters.values()]
    torch_names = [p.name for p in inspect.signature(nn.BatchNorm1d.__init__).parameters.values()]
    assert names == torch_names + ["r_max", "d_max"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"r_max": 0.5}, r"r_max must be at least 1 .*got 0\.5; use 1 for plain BN"),
    ({"d_max": -1.0}, r"d_max must be at least 0 .*got -1\.0; use 0 for plain BN"),
    ({"r_max": float("nan")}, r"r_max must be at least 1"),
])
def test_impossible_bounds_are_refused_at_construction_and_assignment(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchRenorm1d(3, **kwargs)
    layer = BatchRenorm1d(3)
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=message):
        setattr(layer, name, value)


@pytest.mark.parametrize(("layer", "shape", "message"), [
    (BatchRenorm1d(3), (2, 3, 4, 5), r"expected 2D \(N, C\) or 3D \(N, C, L\) input, got 4D"),
    (BatchRenorm2d(3), (2, 5, 2, 2), r"BatchRenorm2d\(3\) expected 3 channels in dim 1, got 5"),
    (BatchRenorm1d(3), (1, 3), r"Expected more than 1 value per channel when training"),
])
def test_bad_input_raises_clear_errors_and_counts_no_step(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))
    assert int(layer.num_batches_tracked) == 0


def test_half_precision_input_keeps_its_dtype():
    layer = BatchRenorm2d(3)
    x = torch.randn(4, 3, 2, 2).to(torch.bfloat16).requires_grad_()
    out = layer(x)
    assert out.dtype == torch.bfloat16 and layer.running_var.dtype == torch.float32
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_schedule_is_bn_during_warm_up_then_ramps_linearly():
    schedule = RenormSchedule(r_max=3.0, d_max=5.0, warmup_steps=10, r_max_step=30,
                              d_max_step=20)
    assert schedule.limits(0) == schedule.limits(10) == (1.0, 0.0)
    assert schedule.limits(20) == (2.0, 5.0)
    assert schedule.limits(30) == schedule.limits(1000) == (3.0, 5.0)
    assert RenormSchedule().limits(5000) == (1.0, 0.0)
    assert RenormSchedule().limits(40000) == (3.0, 5.0)
    model = nn.Sequential(BatchRenorm1d(3), nn.ReLU(), BatchRenorm1d(3), BatchNorm1d(3))
    schedule.apply(model, 15)
    assert [(m.r_max, m.d_max) for m in (model[0], model[2])] == [(1.5, 2.5)] * 2
    with pytest.raises(ValueError, match="warmup_steps"):
        RenormSchedule(warmup_steps=50000)
    with pytest.raises(ValueError, match="r_max >= 1"):
        RenormSchedule(r_max=0.9)


def test_models_accept_batchrenorm():
    mlp = build_mlp((784, 16, 10), norm="batchrenorm", seed=0)
    assert isinstance(mlp[2], BatchRenorm1d) and mlp[1].bias is None
    cnn = build_cnn((4, 8), norm="batchrenorm", seed=0)
    layers = [m for m in cnn.modules() if isinstance(m, BatchRenorm2d)]
    assert [m.num_features for m in layers] == [4, 8]
    cnn(torch.rand(3, 1, 28, 28)).sum().backward()
    assert all(int(m.num_batches_tracked) == 1 for m in layers)
