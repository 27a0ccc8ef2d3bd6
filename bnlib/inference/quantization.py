"""Int8 post-training static quantization of the book's networks, with or without folding BN.

A thin layer over PyTorch's eager-mode quantization (:mod:`torch.ao.quantization`): it finds the
``Conv``/``Linear`` → BN (→ ReLU) runs that :func:`torch.ao.quantization.fuse_modules` can merge,
and quantizes a copy of a model after calibrating its activation ranges on a few batches.
PyTorch 2.13 marks ``prepare`` and ``convert`` deprecated (in favour of the separate ``torchao``
package) but still ships them; their warnings are left to reach the caller.
"""

from __future__ import annotations

import copy

import torch
import torch.ao.quantization as tq
from torch import Tensor, nn

from bnlib.nn.registry import FOLDABLE_TYPES

__all__ = ["check_quantizable", "fusable_groups", "logits_in_batches", "quantize_int8"]

TORCH_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# The layer pairs fuse_modules folds (in eval mode), each optionally followed by a ReLU.
FUSABLE_PAIRS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)


def fusable_groups(model: nn.Module) -> list[list[str]]:
    """Names of the consecutive ``nn.Sequential`` entries that ``fuse_modules`` can merge.

    Each group is a layer and torch's BN after it, plus the ``nn.ReLU`` that follows when there
    is one, for example ``["features.0", "features.1", "features.2"]``. Only torch's own
    ``nn.BatchNorm*`` classes are listed: ``fuse_modules`` recognises no others.
    """
    groups = []
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = [f"{prefix}.{name}" if prefix else name for name, _ in module.named_children()]
        children = list(module.children())
        for i, (layer, bn) in enumerate(zip(children, children[1:])):
            if any(type(layer) is a and type(bn) is b for a, b in FUSABLE_PAIRS):
                relu = i + 2 < len(children) and type(children[i + 2]) is nn.ReLU
                groups.append(names[i:i + 3] if relu else names[i:i + 2])
    return groups


def check_quantizable(model: nn.Module) -> None:
    if any(m.training for m in model.modules()):
        raise ValueError("quantize_int8 needs a model in eval mode (BN must use its running "
                         "statistics); call model.eval() first.")
    foreign = [type(m).__name__ for m in model.modules()
               if isinstance(m, FOLDABLE_TYPES) and not isinstance(m, TORCH_BN_TYPES)]
    if foreign:
        raise ValueError(
            f"torch.ao.quantization knows only torch's BN layers, not {foreign[0]}; copy the "
            "weights into the same network built with norm='torch' (load_state_dict) first.")


def quantize_int8(model: nn.Module, calibration_images: Tensor, *, fuse: bool = True) -> nn.Module:
    """Return an int8 copy of ``model``, quantized after calibrating on ``calibration_images``.

    Weights are quantized per output channel, activations per tensor, with the default
    configuration of the quantized engine in use (``torch.backends.quantized.engine``). With
    ``fuse=True`` every group of :func:`fusable_groups` is merged first, so each BN is folded into
    the layer before it and a ReLU after it runs inside the int8 layer; with ``fuse=False`` the BN
    layers are quantized as layers of their own. The copy takes and returns float tensors.

    Args:
        model (nn.Module): a float model in eval mode, with torch's BN layers.
        calibration_images (Tensor): inputs whose activation ranges set the int8 scales.
        fuse (bool, optional): fold BN (and ReLU) before quantizing. Default: ``True``.

    Raises:
        ValueError: when ``model`` is in training mode or holds a BN that is not torch's.
    """
    check_quantizable(model)
    float_copy = copy.deepcopy(model)
    if fuse:
        tq.fuse_modules(float_copy, fusable_groups(float_copy), inplace=True)
    wrapped = tq.QuantWrapper(float_copy).eval()
    wrapped.qconfig = tq.get_default_qconfig(torch.backends.quantized.engine)
    tq.prepare(wrapped, inplace=True)
    with torch.inference_mode():
        wrapped(calibration_images)  # the observers record the activation ranges
    return tq.convert(wrapped, inplace=True)


def logits_in_batches(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """``model(images)`` computed ``batch_size`` images at a time, for any model, int8 too.

    A CNN's activations for all 10,000 MNIST test images take half a gigabyte at once; batches
    keep the memory small. ``bnlib.evaluate`` cannot serve here: it reads the device of the
    model's parameters, which an int8 model does not expose.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    with torch.inference_mode():
        return torch.cat([model(images[start:start + batch_size])
                          for start in range(0, len(images), batch_size)])
