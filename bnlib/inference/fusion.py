r"""Folding batch normalisation into the layer before it, for inference.

In eval mode BN is a fixed affine map per channel, :math:`y = s\,z + t` with

.. math::
    s = \frac{\gamma}{\sqrt{r_{var} + \epsilon}}, \qquad t = \beta - r_{mean}\, s,

so when it follows a layer :math:`z = W x + b` the pair is one layer with weight :math:`s W` (each
output row, or output channel, scaled) and bias :math:`s\,b + t = s\,(b - r_{mean}) + \beta`. The
functions take the names and signatures of :mod:`torch.nn.utils.fusion` and accept torch's and
bnlib's BN modules, batch renormalisation included (its evaluation is BN's): the layers of
:data:`bnlib.nn.registry.FOLDABLE_TYPES`.
"""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import Tensor, nn

from bnlib.nn.functional import bn_eval_scale_shift
from bnlib.nn.registry import FOLDABLE_TYPES

__all__ = ["fold_sequentials_in_place", "fuse_bn", "fuse_conv_bn_eval",
           "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights"]

ConvT = TypeVar("ConvT", bound=nn.Conv2d)
LinearT = TypeVar("LinearT", bound=nn.Linear)

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d
)


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, FOLDABLE_TYPES)


def fuse_linear_bn_weights(
    linear_w: Tensor, linear_b: Tensor | None, bn_rm: Tensor, bn_rv: Tensor, bn_eps: float,
    bn_w: Tensor | None, bn_b: Tensor | None,
) -> tuple[nn.Parameter, nn.Parameter]:
    r"""Weight and bias of the Linear equal to ``Linear`` then eval-mode BN.

    .. math::
        W' = \operatorname{diag}(s)\, W, \qquad b' = s\,(b - r_{mean}) + \beta, \qquad
        s = \gamma / \sqrt{r_{var} + \epsilon}

    Args:
        linear_w (Tensor): Linear weight, shape :math:`(C, F)`.
        linear_b (Tensor or None): Linear bias, shape :math:`(C,)`; ``None`` means 0.
        bn_rm, bn_rv (Tensor): BN running mean and variance, shape :math:`(C,)`.
        bn_eps (float): BN's :math:`\epsilon`.
        bn_w, bn_b (Tensor or None): BN's :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.

    Shape:
        - Output: weight :math:`(C, F)` and bias :math:`(C,)`, in ``linear_w``'s dtype.
    """
    scale, shift = bn_eval_scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b)
    weight = (linear_w * scale.unsqueeze(-1)).to(linear_w.dtype)
    bias = (shift if linear_b is None else linear_b * scale + shift).to(linear_w.dtype)
    return nn.Parameter(weight, linear_w.requires_grad), nn.Parameter(bias, linear_w.requires_grad)


def fuse_conv_bn_weights(
    conv_w: Tensor, conv_b: Tensor | None, bn_rm: Tensor, bn_rv: Tensor, bn_eps: float,
    bn_w: Tensor | None, bn_b: Tensor | None, transpose: bool = False,
) -> tuple[nn.Parameter, nn.Parameter]:
    r"""Weight and bias of the convolution equal to the convolution then eval-mode BN.

    Every output channel :math:`c` of the kernel is scaled by :math:`s_c`, and the bias is
    :math:`s\,(b - r_{mean}) + \beta`, as for :func:`fuse_linear_bn_weights`.

    Args:
        conv_w (Tensor): convolution weight, :math:`(C_{out}, C_{in}/g, *k)`, or for a transposed
            convolution :math:`(C_{in}, C_{out}/g, *k)`.
        conv_b (Tensor or None): convolution bias, shape :math:`(C_{out},)`; ``None`` means 0.
        bn_rm, bn_rv, bn_eps, bn_w, bn_b: as in :func:`fuse_linear_bn_weights`.
        transpose (bool, optional): the weight is a transposed convolution's, with output
            channels in dim 1 (one group). Default: ``False``.

    Shape:
        - Output: weight shaped as ``conv_w`` and bias :math:`(C_{out},)`, in ``conv_w``'s dtype.
    """
    scale, shift = bn_eval_scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b)
    trailing = [1] * (conv_w.dim() - 2)
    shape = [1, -1] + trailing if transpose else [-1, 1] + trailing
    weight = (conv_w * scale.reshape(shape)).to(conv_w.dtype)
    bias = (shift if conv_b is None else conv_b * scale + shift).to(conv_w.dtype)
    return nn.Parameter(weight, conv_w.requires_grad), nn.Parameter(bias, conv_w.requires_grad)


def _check_foldable(layer: nn.Module, bn: nn.Module, out_channels: int) -> None:
    """Raise a ValueError that says what to do when ``layer`` then ``bn`` cannot be folded."""
    if not _is_bn(bn):
        raise ValueError(f"expected a BatchNorm module, got {type(bn).__name__}.")
    if layer.training or bn.training:
        raise ValueError(
            "folding BN is only valid in eval mode, where BN uses its fixed running statistics; "
            "call model.eval() (or .eval() on both layers) before folding."
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{type(bn).__name__} was built with track_running_stats=False, so it normalises "
            "with each batch's own statistics even in eval mode and is no fixed affine map; "
            "it cannot be folded. Train with track_running_stats=True to fold it."
        )
    if bn.num_features != out_channels:
        raise ValueError(
            f"the layer has {out_channels} output channels but {type(bn).__name__} has "
            f"num_features={bn.num_features}; fold a BN only into the layer that feeds it."
        )


def fuse_linear_bn_eval(linear: LinearT, bn: nn.Module) -> LinearT:
    r"""Return a new Linear equal to ``linear`` followed by the eval-mode ``bn``.

    The inputs are left untouched. The BN must normalise the Linear's output features, that is
    the layers see :math:`(N, C)` inputs (a BatchNorm1d over :math:`(N, C, L)` normalises dim 1,
    which a Linear acting on the last dim does not produce).

    Args:
        linear (nn.Linear): the layer before the BN, with or without bias, in eval mode.
        bn (nn.Module): torch's or bnlib's BatchNorm in eval mode, with running statistics.

    Raises:
        ValueError: in training mode, without running statistics, or with mismatched channels.

    Shape:
        - Input: :math:`(N, F)`.
        - Output: :math:`(N, C)`.
    """
    _check_foldable(linear, bn, linear.out_features)
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(
        linear.weight, linear.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return fused


def fuse_conv_bn_eval(conv: ConvT, bn: nn.Module, transpose: bool = False) -> ConvT:
    r"""Return a new convolution equal to ``conv`` followed by the eval-mode ``bn``.

    The inputs are left untouched. Padding is no obstacle: the BN acts on the convolution's
    output, after the padded input has been convolved.

    Args:
        conv (nn.Conv1d/2d/3d or nn.ConvTranspose1d/2d/3d): the layer before the BN, in eval mode.
        bn (nn.Module): torch's or bnlib's BatchNorm in eval mode, with running statistics.
        transpose (bool, optional): ``conv`` is a transposed convolution. Default: ``False``.

    Raises:
        ValueError: in training mode, without running statistics, with mismatched channels,
            or for a grouped transposed convolution.

    Shape:
        - Input: :math:`(N, C_{in}, *)`.
        - Output: :math:`(N, C_{out}, *)`.
    """
    _check_foldable(conv, bn, conv.out_channels)
    if transpose and conv.groups != 1:
        raise ValueError("folding into a grouped transposed convolution is not supported; "
                         "use groups=1 or keep the BN.")
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias,
        transpose,
    )
    return fused


def _fold_pair(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """The folded layer when ``layer`` can absorb the following ``bn``, else ``None``."""
    if not _is_bn(bn):
        return None
    if isinstance(layer, nn.Linear):
        return fuse_linear_bn_eval(layer, bn)
    if isinstance(layer, CONV_TYPES):
        return fuse_conv_bn_eval(layer, bn)
    if isinstance(layer, CONV_TRANSPOSE_TYPES):
        return fuse_conv_bn_eval(layer, bn, transpose=True)
    return None


def fold_sequentials_in_place(module: nn.Module) -> None:
    """Fold, in place, every layer-BN pair of consecutive entries of each ``nn.Sequential`` in
    ``module`` (``module`` included): the layer gets the folded weights, the BN becomes
    ``nn.Identity``. Use :func:`fuse_bn` to keep the original model.

    Args:
        module (nn.Module): a module in eval mode.
    """
    for child in module.children():
        fold_sequentials_in_place(child)
    if not isinstance(module, nn.Sequential):
        return
    children = list(module.named_children())
    for (first, layer), (second, bn) in zip(children, children[1:]):
        fused = _fold_pair(layer, bn)
        if fused is not None:
            setattr(module, first, fused)
            setattr(module, second, nn.Identity())


def fuse_bn(model: nn.Module) -> nn.Module:
    r"""Return a copy of ``model`` with every Linear/Conv → BN pair folded into one layer.

    A pair is two consecutive entries of an ``nn.Sequential`` (searched recursively, so the
    ``features`` of :class:`~bnlib.SmallCNN` are folded too); the layer takes the folded weights
    and the BN becomes ``nn.Identity``, so the other entries keep their names. Every BN kind of
    :data:`bnlib.nn.registry.FOLDABLE_TYPES` is folded, ``BatchRenorm1d``/``2d`` included. The
    copy computes the same function as ``model`` in eval mode, with one pass over each
    activation fewer.

    A BN placed after the activation, :math:`\mathrm{BN}(\phi(Wx + b))`, is left in place: the
    nonlinearity :math:`\phi` sits between the layer and the BN, and :math:`\phi(s z + t)` is not
    :math:`s\,\phi(z) + t`. It could only be folded forward into the *next* layer's input side,
    which is exact for a Linear but not for a zero-padded convolution (the padding would have to
    be :math:`-t/s` instead of 0), so this function does not attempt it.

    Args:
        model (nn.Module): a model in eval mode; ``model`` itself is not modified.

    Raises:
        ValueError: when ``model`` or any submodule is in training mode, or a BN to be folded has
            no running statistics.

    Shape:
        - Input and output: as ``model``'s.
    """
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"fuse_bn needs a model in eval mode, but {training[0]!r} is training; call "
            "model.eval() first (folding uses the running statistics)."
        )
    folded = copy.deepcopy(model)
    fold_sequentials_in_place(folded)
    return folded
