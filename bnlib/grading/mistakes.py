"""The mistakes :func:`bnlib.grade_batchnorm` can recognise, each with what it means and where the
book explains it.

A diagnosis is a key of :data:`MISTAKES`; the grader picks one when the numbers a layer gives
match what that mistake would give (see :mod:`bnlib.grading.checks`).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CHAPTERS", "MISTAKES", "Mistake", "pointer"]

# label -> title of the chapter, as the book's {ref} labels name them
CHAPTERS = {
    "bn-transform": "The BN transform",
    "bn-backprop": "Backpropagation through Batch Normalization",
}


class Mistake(NamedTuple):
    title: str  # the mistake, in a few words
    why: str  # what the numbers showed and what torch does instead
    chapter: str  # label of the chapter that explains it
    where: str  # equation labels or a section title inside that chapter


def pointer(chapter: str, where: str) -> str:
    """'See <chapter title> (<label>), <where>.'"""
    return f"See '{CHAPTERS[chapter]}' ({chapter}), {where}."


_TRANSFORM, _BACKPROP = "bn-transform", "bn-backprop"
_MODES = "section 'The module: training mode and evaluation mode'"
_AXES = "section 'Which values share a mean' and its table"

MISTAKES = {
    "unbiased_normalisation": Mistake(
        "unbiased variance used to normalise",
        "The output matches normalising with the unbiased variance (dividing by m - 1, which "
        "x.var() does by default). Training mode normalises with the biased variance, dividing "
        "by m: use x.var(dims, correction=0) or ((x - mean)**2).mean(dims).",
        _TRANSFORM, "equation bn-transform-var"),
    "eps_outside_sqrt": Mistake(
        "epsilon added outside the square root",
        "The output matches (x - mean) / (sqrt(var) + eps). Epsilon belongs under the root: "
        "(x - mean) / sqrt(var + eps).",
        _TRANSFORM, "equation bn-transform-normalise"),
    "no_eps": Mistake(
        "epsilon left out",
        "The output matches (x - mean) / sqrt(var), without epsilon; it shows on a channel whose "
        "variance is not much larger than eps.",
        _TRANSFORM, "equation bn-transform-normalise"),
    "no_affine": Mistake(
        "gamma and beta not applied",
        "The output matches the normalised x_hat itself: the learned scale (weight) and shift "
        "(bias) are not applied.",
        _TRANSFORM, "equation bn-transform-scale-shift"),
    "running_stats_in_training": Mistake(
        "running statistics used in training mode",
        "The training-mode output matches normalising with the running statistics. In training "
        "mode each batch is normalised with its own mean and biased variance.",
        _TRANSFORM, "equations bn-transform-mean to bn-transform-normalise"),
    "wrong_dims": Mistake(
        "statistics over the wrong dims",
        "Each channel's statistics must pool every dim except dim 1: (N,) for (N, C) inputs, "
        "(N, H, W) for (N, C, H, W) inputs.",
        _TRANSFORM, _AXES),
    "biased_running_var": Mistake(
        "biased variance in running_var",
        "running_var follows the biased batch variances. torch normalises a training batch with "
        "the biased variance but stores the unbiased one, m/(m - 1) times larger (Bessel's "
        "correction), in running_var.",
        _TRANSFORM, "equation bn-transform-population"),
    "keras_momentum": Mistake(
        "Keras-style momentum",
        "The running statistics moved by (1 - momentum) times the new batch statistic. In torch, "
        "momentum is the weight of the new statistic, r = (1 - momentum) r + momentum s; Keras "
        "writes the same average with the weights the other way round.",
        _TRANSFORM, "equations bn-transform-running-torch and bn-transform-running-keras"),
    "keras_momentum_biased_var": Mistake(
        "Keras-style momentum and biased variance in running_var",
        "The running statistics follow Keras's rule: the old value keeps weight momentum, and "
        "running_var averages biased variances. torch gives the new statistic weight momentum "
        "and stores the unbiased variance.",
        _TRANSFORM, "equations bn-transform-running-torch, bn-transform-running-keras and "
                    "bn-transform-keras-variance"),
    "stats_not_updated": Mistake(
        "running statistics never updated",
        "running_mean and running_var keep their initial values (0 and 1) after training steps: "
        "the update is lost (assigned to a copy, or never made).",
        _TRANSFORM, "equation bn-transform-running-torch"),
    "stats_replaced": Mistake(
        "running statistics replaced by the last batch",
        "The running statistics equal the last batch's statistics instead of a moving average.",
        _TRANSFORM, "equation bn-transform-running-unrolled"),
    "momentum_ignored": Mistake(
        "momentum argument ignored",
        "The running statistics move as with the default momentum 0.1, not the one passed.",
        _TRANSFORM, "equation bn-transform-running-torch"),
    "cumulative_missing": Mistake(
        "momentum=None is not the cumulative average",
        "With momentum=None torch keeps the plain average of every batch statistic so far: the "
        "factor at step t is 1/t, counted in num_batches_tracked.",
        _TRANSFORM, "equation bn-transform-cumulative"),
    "no_running_statistics": Mistake(
        "no running statistics found",
        "The layer has no tensor named running_mean and running_var (nor moving_mean and "
        "moving_var) with one value per channel, so evaluation cannot use population statistics.",
        _TRANSFORM, "equations bn-transform-population and bn-transform-running-torch"),
    "no_eval_mode": Mistake(
        "no eval mode",
        "In eval mode the output matches normalising with the batch's own statistics. After "
        "model.eval() the layer must use running_mean and running_var, a fixed affine map.",
        _TRANSFORM, "equation bn-transform-inference and " + _MODES),
    "grad_mode_switch": Mistake(
        "mode chosen by torch.is_grad_enabled(), not self.training",
        "The layer uses batch statistics whenever gradients are on and running statistics under "
        "torch.no_grad(), whatever model.train() or model.eval() said. torch decides by "
        "self.training only: eval mode with gradients on (fine-tuning frozen statistics) and "
        "training mode under no_grad (recomputing statistics) both exist.",
        _TRANSFORM, _MODES),
    "stats_updated_in_eval": Mistake(
        "running statistics updated in eval mode",
        "A forward pass in eval mode changed the running statistics. Only training-mode batches "
        "update them; evaluating must not move them.",
        _TRANSFORM, _MODES),
    "num_batches_tracked_missing": Mistake(
        "num_batches_tracked missing",
        "torch counts training batches in a long buffer named num_batches_tracked: momentum=None "
        "needs it, and every torch state dict carries it.",
        _TRANSFORM, "equation bn-transform-cumulative"),
    "num_batches_tracked_wrong": Mistake(
        "num_batches_tracked miscounted",
        "num_batches_tracked must start at 0, grow by one per training-mode batch and stay put "
        "in eval mode.",
        _TRANSFORM, "equation bn-transform-cumulative"),
    "state_dict_keys": Mistake(
        "state dict keys differ from torch's",
        "A torch state dict will not load into this layer, nor this one into torch's. torch "
        "names the parameters weight and bias and keeps running_mean, running_var and "
        "num_batches_tracked as buffers (register_buffer); plain tensor attributes are not saved.",
        _TRANSFORM, "section 'Checking bnlib against torch.nn'"),
    "initial_values": Mistake(
        "initial values differ from torch's",
        "A fresh layer starts with weight 1, bias 0, running_mean 0, running_var 1 and "
        "num_batches_tracked 0.",
        _TRANSFORM, "equations bn-transform-scale-shift and bn-transform-running-torch"),
    "batch_of_one_accepted": Mistake(
        "a batch of one accepted in training mode",
        "With one value per channel the batch variance is 0, so x_hat is 0 whatever the input "
        "(or NaN with the unbiased variance). torch raises a ValueError instead.",
        _TRANSFORM, "equation bn-transform-var and " + _MODES),
    "detached_statistics": Mistake(
        "batch statistics treated as constants in the backward pass",
        "The input gradient matches dy * gamma / sqrt(var + eps) alone: the terms that flow "
        "through the batch mean and variance are missing (statistics detached or .data used).",
        _BACKPROP, "equations bp-dvar, bp-dmean and bp-dx-compact"),
    "no_parameter_gradient": Mistake(
        "weight or bias gets no gradient",
        "After backward, weight or bias has no .grad: they must be nn.Parameter objects used in "
        "the forward pass with autograd on.",
        _BACKPROP, "equation bp-dparams"),
    "no_input_gradient": Mistake(
        "no gradient reaches the input",
        "After backward the input has no .grad: the output is cut off from the input (computed "
        "under torch.no_grad(), or from .data).",
        _BACKPROP, "equation bp-dx-compact"),
    "forward_wrong": Mistake(
        "forward pass already differs",
        "The training-mode output differs from torch's, so the gradients cannot match; fix the "
        "forward pass first.",
        _TRANSFORM, "equations bn-transform-mean to bn-transform-scale-shift"),
    "eps_ignored": Mistake(
        "eps argument ignored",
        "The output matches the default eps 1e-5, not the eps passed.",
        _TRANSFORM, "equation bn-transform-normalise"),
    "affine_false_has_parameters": Mistake(
        "affine=False still learns gamma and beta",
        "With affine=False torch registers no parameters (weight and bias are None) and the "
        "output is x_hat.",
        _TRANSFORM, "equation bn-transform-scale-shift"),
    "untracked_uses_running_stats": Mistake(
        "track_running_stats=False still uses running statistics",
        "Without running statistics torch normalises with the batch statistics in eval mode too "
        "and keeps no running_mean, running_var or num_batches_tracked (they are None).",
        _TRANSFORM, _MODES),
    "wrong_shape": Mistake(
        "wrong output shape",
        "The output must have the input's shape.",
        _TRANSFORM, "section 'Which values share a mean'"),
    "raised": Mistake(
        "the layer raised an exception",
        "The layer raised where torch's gives a result.",
        _TRANSFORM, "equations bn-transform-mean to bn-transform-inference"),
    "unexplained": Mistake(
        "differs from torch",
        "The numbers fit none of the usual mistakes the grader knows; compare your code with the "
        "equations step by step.",
        _TRANSFORM, "equations bn-transform-mean to bn-transform-inference"),
}
