"""What the evaluation-mode map of BN allows: fold it into the layer before it
(:mod:`bnlib.inference.fusion`), or re-estimate its statistics after training or on new data
(:mod:`bnlib.inference.recalibrate`), or quantize the folded network to int8
(:mod:`bnlib.inference.quantization`, imported on its own: it loads ``torch.ao.quantization``)."""

from bnlib.inference.fusion import fuse_bn, fuse_conv_bn_eval, fuse_linear_bn_eval
from bnlib.inference.recalibrate import batch_norm_layers, recompute_bn_statistics

__all__ = ["batch_norm_layers", "fuse_bn", "fuse_conv_bn_eval", "fuse_linear_bn_eval",
           "recompute_bn_statistics"]
