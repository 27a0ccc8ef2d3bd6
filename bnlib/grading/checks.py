r"""The checks of :func:`bnlib.grade_batchnorm`, one point of torch's BN contract each.

Every check builds the learner's layer next to torch's (float64, same :math:`\gamma` and
:math:`\beta`), feeds both the same batches and returns a :class:`Finding`: the largest difference
seen and, when they disagree, the mistake whose predicted numbers match the learner's (a key of
:data:`bnlib.grading.mistakes.MISTAKES`). Exceptions are left to the caller.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnlib.grading.probes import (
    CHANNELS,
    TOLERANCE,
    Finding,
    Subject,
    affine_tensors,
    biggest_gap,
    first_match,
    matches,
    normalise,
    running_statistics,
    scale_shift,
    set_running_statistics,
)
from bnlib.grading.running import (
    check_eval_leaves_statistics,
    check_momentum,
    check_momentum_none,
    check_num_batches_tracked,
    check_running_statistics,
)

__all__ = ["Finding", "check_affine_false", "check_batch_of_one", "check_eps",
           "check_eval_leaves_statistics", "check_eval_output", "check_gradients",
           "check_initial_state", "check_momentum", "check_momentum_none",
           "check_num_batches_tracked", "check_running_statistics", "check_state_dict",
           "check_training_output", "check_training_under_no_grad", "check_untracked"]

# exact in float32, so layers that keep float32 buffers are not penalised for rounding
EVAL_MEAN = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64)
EVAL_VAR = torch.tensor([2.0, 0.0625, 4.5], dtype=torch.float64)
WRONG_DIMS_2D = {"(N,) only": (0,), "(N, H) only": (0, 2), "(N, W) only": (0, 3),
                 "each example's (C, H, W), like LayerNorm": (1, 2, 3),
                 "the whole batch, all channels together": (0, 1, 2, 3)}


def _wrong_dims_hypotheses(x: Tensor, reference) -> list[tuple[str, Tensor, str]]:
    """Outputs with the statistics of a (N, C, H, W) input taken over the wrong dims, or from
    x.reshape(-1, C), whose columns mix the channels."""
    w, b, eps = reference.weight, reference.bias, reference.eps
    hypotheses = [("wrong_dims", normalise(x, dims, eps, weight=w, bias=b),
                   f"The output matches statistics over {name} instead of (N, H, W).")
                  for name, dims in WRONG_DIMS_2D.items()]
    var, mean = torch.var_mean(x.reshape(-1, CHANNELS), dim=0, correction=0)
    view = (1, CHANNELS, 1, 1)
    x_hat = (x - mean.view(view)) / (var.view(view) + eps).sqrt()
    hypotheses.append(("wrong_dims", scale_shift(x_hat, w, b),
                       "The output matches statistics of x.reshape(-1, C), whose columns mix "
                       "values of every channel; reduce over dims (0, 2, 3) instead, or over "
                       "dim 1 of x.transpose(0, 1).reshape(C, -1)."))
    return hypotheses


def _output_finding(actual, expected: Tensor, hypotheses) -> Finding:
    """Compare an output with torch's; name the first hypothesis it matches when it differs."""
    if not isinstance(actual, Tensor) or actual.shape != expected.shape:
        got = tuple(actual.shape) if isinstance(actual, Tensor) else type(actual).__name__
        return Finding(None, "wrong_shape", f"Got {got} for an input of {tuple(expected.shape)}.")
    gap = biggest_gap(actual, expected)
    if gap <= TOLERANCE:
        return Finding(gap, None)
    return first_match(gap, actual, hypotheses)


def _training_hypotheses(subject: Subject, reference, x: Tensor, eps: float = 1e-5):
    w, b, dims = reference.weight, reference.bias, subject.reduce_dims
    hypotheses = [
        ("unbiased_normalisation", normalise(x, dims, eps, correction=1, weight=w, bias=b), ""),
        ("eps_outside_sqrt", normalise(x, dims, eps, eps_outside=True, weight=w, bias=b), ""),
        ("no_eps", normalise(x, dims, 0.0, weight=w, bias=b), ""),
        ("eps_ignored", normalise(x, dims, 1e-5, weight=w, bias=b), ""),
        ("running_stats_in_training", scale_shift(x / (1 + eps) ** 0.5, w, b), ""),
    ]
    if w is not None:
        hypotheses.append(("no_affine", normalise(x, dims, eps), ""))
    if subject.kind == 2:
        hypotheses += _wrong_dims_hypotheses(x, reference)
    return hypotheses


def check_training_output(subject: Subject, **kwargs) -> Finding:
    """Training mode: one batch through both layers."""
    layer, reference = subject.pair(**kwargs)
    x = subject.batch(0)
    expected = reference(x)
    eps = reference.eps
    return _output_finding(layer(x), expected, _training_hypotheses(subject, reference, x, eps))


def _input_gradient_without_statistics(reference, x: Tensor, dy: Tensor, dims) -> Tensor:
    """dy * gamma / sqrt(var + eps): the input gradient if mean and variance were constants."""
    var = torch.var_mean(x, dim=tuple(dims), correction=0, keepdim=True)[0]
    return scale_shift(dy / (var + reference.eps).sqrt(), reference.weight, None)


def check_gradients(subject: Subject) -> Finding:
    """Training mode: the input, weight and bias gradients of one backward pass."""
    layer, reference = subject.pair()
    x, dy = subject.batch(1), subject.batch(7) - 1.0
    x_ours, x_torch = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, expected = layer(x_ours), reference(x_torch)
    if not matches(ours, expected):
        return Finding(biggest_gap(ours, expected), "forward_wrong")
    if not ours.requires_grad:
        return Finding(None, "no_input_gradient")
    ours.backward(dy)
    expected.backward(dy)
    if x_ours.grad is None:
        return Finding(None, "no_input_gradient")
    gamma, beta = affine_tensors(layer)
    if gamma is None or beta is None or gamma.grad is None or beta.grad is None:
        return Finding(None, "no_parameter_gradient")
    gap = max(biggest_gap(x_ours.grad, x_torch.grad),
              biggest_gap(gamma.grad, reference.weight.grad),
              biggest_gap(beta.grad, reference.bias.grad))
    if gap <= TOLERANCE:
        return Finding(gap, None)
    detached = _input_gradient_without_statistics(reference, x, dy, subject.reduce_dims)
    return first_match(gap, x_ours.grad, [("detached_statistics", detached, "")])


def _eval_pair(subject: Subject, **kwargs):
    """Both layers with the same running statistics, in eval mode; None when the learner's
    layer has no running statistics to set."""
    layer, reference = subject.pair(**kwargs)
    if not set_running_statistics(layer, EVAL_MEAN, EVAL_VAR):
        return None
    set_running_statistics(reference, EVAL_MEAN, EVAL_VAR)
    return layer.eval(), reference.eval()


def _eval_with_running(x: Tensor, reference, eps: float, eps_outside: bool = False) -> Tensor:
    """The eval-mode output with EVAL_MEAN and EVAL_VAR, the reference's gamma and beta, and
    ``eps`` under the square root (or outside it)."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    std = EVAL_VAR.sqrt() + eps if eps_outside else (EVAL_VAR + eps).sqrt()
    x_hat = (x - EVAL_MEAN.view(view)) / std.view(view)
    return scale_shift(x_hat, reference.weight, reference.bias)


def check_eval_output(subject: Subject, **kwargs) -> Finding:
    """Eval mode, with the same running statistics written into both layers."""
    pair = _eval_pair(subject, **kwargs)
    if pair is None:
        return Finding(None, "no_running_statistics")
    layer, reference = pair
    x = subject.batch(2)
    expected, actual = reference(x), layer(x)
    w, b = reference.weight, reference.bias
    hypotheses = [("no_eval_mode", normalise(x, subject.reduce_dims, reference.eps, weight=w,
                                             bias=b), ""),
                  ("eps_outside_sqrt", _eval_with_running(x, reference, reference.eps,
                                                          eps_outside=True), ""),
                  ("eps_ignored", _eval_with_running(x, reference, 1e-5), "")]
    finding = _output_finding(actual, expected, hypotheses)
    if finding.diagnosis == "no_eval_mode" and _eval_right_under_no_grad(layer, x, expected):
        return finding._replace(diagnosis="grad_mode_switch")
    return finding


def _eval_right_under_no_grad(layer, x: Tensor, expected: Tensor) -> bool:
    set_running_statistics(layer, EVAL_MEAN, EVAL_VAR)  # the first call may have moved them
    with torch.no_grad():
        return matches(layer(x), expected)


def check_eps(subject: Subject) -> Finding:
    """eps=0.1, far from the default: training output and eval output."""
    training = check_training_output(subject, eps=0.1)
    if training.diagnosis:
        return training
    evaluation = check_eval_output(subject, eps=0.1)
    if evaluation.diagnosis:
        return evaluation
    return Finding(max(training.gap, evaluation.gap), None)


def check_training_under_no_grad(subject: Subject) -> Finding:
    """Training mode inside torch.no_grad(): batch statistics, and the running ones move."""
    layer, reference = subject.pair()
    x = subject.batch(5)
    with torch.no_grad():
        actual, expected = layer(x), reference(x)
    hypotheses = [("grad_mode_switch", scale_shift(x / (1 + reference.eps) ** 0.5,
                                                   reference.weight, reference.bias), "")]
    hypotheses += _training_hypotheses(subject, reference, x)
    finding = _output_finding(actual, expected, hypotheses)
    if finding.diagnosis:
        return finding
    mean, var = running_statistics(layer)
    gap = max(biggest_gap(mean, reference.running_mean), biggest_gap(var, reference.running_var))
    if gap <= TOLERANCE:
        return Finding(max(gap, finding.gap), None)
    return Finding(gap, "grad_mode_switch" if matches(mean, torch.zeros(CHANNELS)) else
                   "unexplained", "The running statistics did not follow torch's under no_grad.")


def check_state_dict(subject: Subject, **kwargs) -> Finding:
    """The same keys as torch's state dict, and each loads into the other."""
    layer, reference = subject.build(**kwargs), subject.reference(**kwargs)
    keys, expected = list(layer.state_dict()), list(reference.state_dict())
    missing = [k for k in expected if k not in keys]
    unexpected = [k for k in keys if k not in expected]
    if missing == ["num_batches_tracked"] and not unexpected:
        return Finding(None, "num_batches_tracked_missing")
    if missing or unexpected:
        return Finding(None, "state_dict_keys", f"Missing: {missing or 'none'}; not in torch's: "
                                                f"{unexpected or 'none'}.")
    try:
        layer.load_state_dict(reference.state_dict())
        reference.load_state_dict(layer.state_dict())
    except RuntimeError as error:
        return Finding(None, "state_dict_keys", str(error).splitlines()[-1].strip())
    return Finding(None, None)


def check_initial_state(subject: Subject) -> Finding:
    """A fresh layer: weight 1, bias 0, running_mean 0, running_var 1 (what it has of these)."""
    layer = subject.build()
    ones, zeros = torch.ones(CHANNELS), torch.zeros(CHANNELS)
    pairs = list(zip(affine_tensors(layer), (ones, zeros)))
    pairs += list(zip(running_statistics(layer), (zeros, ones)))
    gaps = [biggest_gap(found, value) for found, value in pairs if found is not None]
    gap = max(gaps, default=0.0)
    return Finding(gap, None if gap <= TOLERANCE else "initial_values")


def check_batch_of_one(subject: Subject) -> Finding:
    """Training mode refuses one value per channel; eval mode takes a batch of one."""
    layer, reference = subject.pair()
    x = subject.batch(6, count=1)
    if subject.kind == 2:
        x = x[:, :, :1, :1]  # one value per channel: torch refuses this too
    try:
        layer(x)
    except Exception:  # noqa: BLE001  torch raises ValueError; any refusal keeps the contract
        pass
    else:
        return Finding(None, "batch_of_one_accepted")
    layer.eval(), reference.eval()
    expected = reference(x)
    return _output_finding(layer(x), expected, [])


def check_affine_false(subject: Subject) -> Finding:
    """affine=False: no parameters, and the output is x_hat."""
    layer = subject.build(affine=False)
    names = [name for name, _ in layer.named_parameters()]
    if names:
        return Finding(None, "affine_false_has_parameters", f"Parameters found: {names}.")
    return check_training_output(subject, affine=False)


def check_untracked(subject: Subject) -> Finding:
    """track_running_stats=False: no running buffers, batch statistics in eval mode too."""
    layer, reference = subject.pair(track_running_stats=False)
    for seed in range(2):
        layer(subject.batch(seed)), reference(subject.batch(seed))
    layer.eval(), reference.eval()
    x = subject.batch(3)
    w, b = reference.weight, reference.bias
    running = running_statistics(layer)
    hypotheses = [("untracked_uses_running_stats", scale_shift(x / (1 + reference.eps) ** 0.5,
                                                               w, b), "")]
    if running[0] is not None and running[1] is not None:
        view = (1, -1) + (1,) * (x.dim() - 2)
        x_hat = (x - running[0].view(view)) / (running[1].view(view) + reference.eps).sqrt()
        hypotheses.append(("untracked_uses_running_stats", scale_shift(x_hat, w, b), ""))
    finding = _output_finding(layer(x), reference(x), hypotheses)
    if finding.diagnosis:
        return finding
    keys = check_state_dict(subject, track_running_stats=False)
    diagnosis = keys.diagnosis and "untracked_uses_running_stats"
    return Finding(finding.gap, diagnosis, keys.detail)
