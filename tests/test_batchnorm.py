"""bnlib.nn.batchnorm.BatchNorm1d / BatchNorm2d as drop-ins for torch's modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlib.nn import BatchNorm1d, BatchNorm2d

# (our class, torch's class, input shape)
LAYOUTS = [
    (BatchNorm1d, nn.BatchNorm1d, (6, 3)),
    (BatchNorm1d, nn.BatchNorm1d, (5, 3, 4)),
    (BatchNorm2d, nn.BatchNorm2d, (4, 3, 3, 2)),
]
LAYOUT_IDS = ["1d-NC", "1d-NCL", "2d-NCHW"]
MODES = ["manual", "autograd"]
FLAGS = [(True, True), (True, False), (False, True), (False, False)]
FLAG_IDS = ["affine-track", "affine-notrack", "plain-track", "plain-notrack"]


def make_pair(ours_cls, torch_cls, affine=True, track=True, momentum=0.1, backward="manual"):
    """Our module and torch's with identical random float64 parameters."""
    ours = ours_cls(3, momentum=momentum, affine=affine, track_running_stats=track,
                    backward=backward).double()
    theirs = torch_cls(3, momentum=momentum, affine=affine, track_running_stats=track).double()
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def assert_same_buffers(ours, theirs):
    mine, reference = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert list(mine) == list(reference)
    torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("affine", "track"), FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
@pytest.mark.parametrize("backward", MODES)
def test_training_steps_then_eval_match_torch(ours_cls, torch_cls, shape, affine, track,
                                              momentum, backward):
    ours, theirs = make_pair(ours_cls, torch_cls, affine, track, momentum, backward)
    generator = torch.Generator().manual_seed(1)
    for step in range(3):
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * (step + 1) + step
        torch.testing.assert_close(ours(x), theirs(x))
        assert_same_buffers(ours, theirs)
    if track:
        assert int(ours.num_batches_tracked) == 3
    ours.eval()
    theirs.eval()
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))
    assert_same_buffers(ours, theirs)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("affine", "track"), FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backward", MODES)
def test_gradients_match_torch(ours_cls, torch_cls, shape, affine, track, training, backward):
    ours, theirs = make_pair(ours_cls, torch_cls, affine, track, backward=backward)
    ours.train(training)
    theirs.train(training)
    x = torch.randn(shape, dtype=torch.float64)
    dy = torch.randn(shape, dtype=torch.float64)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours).backward(dy)
    theirs(x_theirs).backward(dy)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine.grad, reference.grad)


def test_cumulative_average_when_momentum_is_none():
    layer = BatchNorm1d(2, momentum=None).double()
    batches = [torch.randn(8, 2, dtype=torch.float64) + k for k in range(4)]
    for batch in batches:
        layer(batch)
    expected_mean = torch.stack([batch.mean(0) for batch in batches]).mean(0)
    expected_var = torch.stack([batch.var(0) for batch in batches]).mean(0)
    torch.testing.assert_close(layer.running_mean, expected_mean)
    torch.testing.assert_close(layer.running_var, expected_var)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize(("affine", "track"), FLAGS, ids=FLAG_IDS)
def test_state_dict_round_trips_both_ways(ours_cls, torch_cls, shape, affine, track):
    ours, theirs = make_pair(ours_cls, torch_cls, affine, track)
    theirs(torch.randn(shape, dtype=torch.float64))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert_same_buffers(ours, theirs)
    ours(torch.randn(shape, dtype=torch.float64) + 3)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert_same_buffers(ours, theirs)
    assert ours.state_dict()._metadata[""] == theirs.state_dict()._metadata[""]


def test_state_dict_without_num_batches_tracked_loads_like_torch():
    old = nn.BatchNorm1d(3).state_dict()
    del old["num_batches_tracked"]
    old._metadata[""]["version"] = 1
    layer = BatchNorm1d(3)
    layer.num_batches_tracked.fill_(5)
    layer.load_state_dict(old, strict=True)
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize(("affine", "track"), FLAGS, ids=FLAG_IDS)
def test_parameters_and_buffers_are_none_when_disabled(affine, track):
    layer = BatchNorm2d(4, affine=affine, track_running_stats=track)
    assert (layer.weight is None, layer.bias is None) == (not affine, not affine)
    assert all((getattr(layer, n) is None) == (not track)
               for n in ("running_mean", "running_var", "num_batches_tracked"))
    assert len(list(layer.parameters())) == (2 if affine else 0)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(("affine", "track"), FLAGS, ids=FLAG_IDS)
def test_repr_matches_torch(momentum, affine, track):
    kwargs = {"eps": 1e-3, "momentum": momentum, "affine": affine, "track_running_stats": track}
    assert repr(BatchNorm1d(5, **kwargs)) == repr(nn.BatchNorm1d(5, **kwargs))
    assert repr(BatchNorm2d(5, **kwargs)) == repr(nn.BatchNorm2d(5, **kwargs))


def test_reset_running_stats_and_parameters():
    layer = BatchNorm1d(3)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(1.0)
    layer(torch.randn(10, 3) + 4)
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, torch.zeros(3))
    assert torch.equal(layer.running_var, torch.ones(3))
    assert int(layer.num_batches_tracked) == 0
    assert torch.equal(layer.weight, torch.full((3,), 2.0))
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(3)) and torch.equal(layer.bias, torch.zeros(3))


@pytest.mark.parametrize("backward", MODES)
def test_eval_mode_changes_no_buffer(backward):
    layer = BatchNorm2d(3, backward=backward)
    layer(torch.randn(4, 3, 2, 2))
    before = {name: buffer.clone() for name, buffer in layer.named_buffers()}
    layer.eval()
    layer(torch.randn(4, 3, 2, 2) * 5 + 2)
    layer(torch.randn(1, 3, 1, 1))  # one value per channel is fine in eval
    for name, buffer in layer.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_without_running_stats_eval_uses_batch_statistics():
    layer = BatchNorm1d(2, affine=False, track_running_stats=False).eval()
    out = layer(torch.randn(64, 2) * 3 + 7)
    torch.testing.assert_close(out.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


def test_normalisation_never_calls_torch_batch_norm(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch's batch norm was called")

    for owner, name in [(torch, "batch_norm"), (torch, "native_batch_norm"), (F, "batch_norm")]:
        monkeypatch.setattr(owner, name, forbidden)
    for backward in MODES:
        layer = BatchNorm2d(3, backward=backward)
        layer(torch.randn(4, 3, 2, 2, requires_grad=True)).sum().backward()
        layer.eval()(torch.randn(4, 3, 2, 2))


def test_works_inside_sequential_and_after_to_float64():
    model = nn.Sequential(nn.Linear(4, 3), BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    model = model.to(torch.float64)
    assert model[1].running_mean.dtype == torch.float64 and model[1].weight.dtype == torch.float64
    assert model[1].num_batches_tracked.dtype == torch.long
    x = torch.randn(8, 4, dtype=torch.float64)
    model(x).sum().backward()
    assert model[1].weight.grad is not None and model[0].weight.grad is not None
    assert model.eval()(x).dtype == torch.float64


def test_device_and_dtype_keywords_create_tensors_there():
    layer = BatchNorm2d(3, device="cpu", dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.running_var.dtype == torch.float64
    assert layer.num_batches_tracked.dtype == torch.long


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (BatchNorm1d(3), (2, 3, 4, 5), r"expected 2D \(N, C\) or 3D \(N, C, L\) input, got 4D"),
        (BatchNorm1d(3), (3,), r"got 1D input of shape \(3,\)"),
        (BatchNorm2d(3), (2, 3, 4), r"expected 4D \(N, C, H, W\) input, got 3D"),
        (BatchNorm1d(3), (4, 2), r"expected 3 channels in dim 1, got 2.*num_features"),
        (BatchNorm2d(3), (2, 5, 2, 2), r"BatchNorm2d\(3\) expected 3 channels in dim 1, got 5"),
        (BatchNorm1d(3), (1, 3),
         r"Expected more than 1 value per channel when training, got input size .*model\.eval\(\)"),
        (BatchNorm2d(3), (1, 3, 1, 1),
         r"more than 1 value per channel.*torch\.Size\(\[1, 3, 1, 1\]\)"),
    ],
)
def test_bad_input_raises_clear_errors(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


def test_a_batch_of_one_without_running_statistics_is_not_told_to_use_eval_mode():
    """Without running statistics eval mode normalises with the batch too, as torch's does, so
    the error must not suggest model.eval()."""
    layer = BatchNorm1d(3, track_running_stats=False).eval()
    with pytest.raises(ValueError, match=r"more than 1 value per channel") as error:
        layer(torch.randn(1, 3))
    assert "track_running_stats=False" in str(error.value)
    assert "model.eval()" not in str(error.value)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3, track_running_stats=False).eval()(torch.randn(1, 3))


def test_unknown_backward_mode_is_rejected():
    with pytest.raises(ValueError, match=r"backward must be one of .*got 'numerical'"):
        BatchNorm1d(3, backward="numerical")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("affine", "track"), FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("backward", MODES)
def test_float32_layer_returns_the_dtype_of_a_half_precision_input(dtype, training, affine, track,
                                                                    backward):
    """As in torch on CPU, a float32 layer keeps bfloat16/float16 activations in their dtype in
    both modes, so a half-precision network runs in eval as it does in training."""
    ours, theirs = make_pair(BatchNorm2d, nn.BatchNorm2d, affine, track, backward=backward)
    ours, theirs = ours.float(), theirs.float()
    x = torch.randn(4, 3, 3, 2)
    ours(x * 2 + 1)  # move the running statistics away from their initial values
    theirs(x * 2 + 1)
    ours.train(training)
    theirs.train(training)
    half = (torch.randn(4, 3, 3, 2) * 3 - 1).to(dtype)
    out, expected = ours(half), theirs(half)
    assert out.dtype == expected.dtype == dtype
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.02, atol=0.02)
    assert ours.weight is None or ours.weight.dtype == torch.float32
    if track:
        assert ours.running_mean.dtype == torch.float32
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=0.01, atol=0.01)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backward", MODES)
def test_half_precision_input_gets_gradients_in_its_dtype(dtype, backward):
    layer = BatchNorm1d(3, backward=backward)
    x = torch.randn(8, 3).to(dtype).requires_grad_()
    layer(x).float().pow(2).sum().backward()
    assert x.grad.dtype == dtype and layer.weight.grad.dtype == torch.float32
    assert torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize(("ours_cls", "torch_cls"), [(BatchNorm1d, nn.BatchNorm1d),
                                                     (BatchNorm2d, nn.BatchNorm2d)])
def test_constructor_takes_torch_arguments_in_torch_order(ours_cls, torch_cls):
    import inspect

    def parameters(cls):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls.__init__).parameters.values()]

    # Ours adds the keyword-only `backward` after torch's arguments, and nothing else.
    assert parameters(ours_cls)[:-1] == parameters(torch_cls)
    assert parameters(ours_cls)[-1] == ("backward", inspect.Parameter.KEYWORD_ONLY, "manual")
    ours = ours_cls(3, 1e-3, 0.2, True, False, "cpu", torch.float64)
    assert (ours.eps, ours.momentum, ours.running_mean) == (1e-3, 0.2, None)
    assert ours.weight.dtype == torch.float64


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backward", MODES)
def test_affine_without_bias_matches_torch(ours_cls, torch_cls, shape, training, backward):
    theirs = torch_cls(3, bias=False).double()
    ours = ours_cls(3, bias=False, backward=backward).double()
    assert ours.bias is None and list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.running_mean.normal_()
        theirs.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(theirs.state_dict())
    ours.train(training), theirs.train(training)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    dy = torch.randn(shape, dtype=torch.float64)
    out, ref = ours(x), theirs(x_ref)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    out.backward(dy), ref.backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-10, atol=1e-10)
    assert_same_buffers(ours, theirs)
    assert repr(ours) == repr(theirs)
