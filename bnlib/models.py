"""Small MNIST classifiers with optional batch normalisation.

The models reproduce the settings studied in the batch-normalisation paper: a fully connected
network whose hidden layers may be normalised before or after the nonlinearity, optionally started
from a "small Gaussian" initialisation, and a small convolutional network with ``BatchNorm2d``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

from bnlib._checks import is_number
from bnlib.nn.batchnorm import BatchNorm1d, BatchNorm2d
from bnlib.nn.groupnorm import group_norm_for, layer_norm_over_channels
from bnlib.nn.layernorm import LayerNorm
from bnlib.nn.registry import ACTIVATIONS
from bnlib.nn.renorm import BatchRenorm1d, BatchRenorm2d

__all__ = ["INITS", "NORMS_1D", "NORMS_2D", "PRACTITIONER_INIT",
           "build_mlp", "SmallCNN", "build_cnn", "initialise"]


# Normalisation layers by name: each factory takes the number of features (channels). A new
# normalisation (LayerNorm, GroupNorm, ...) only needs an entry here; "none" means no layer.
NORMS_1D: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "torch": nn.BatchNorm1d,
    "bnlib": BatchNorm1d,
    "batchrenorm": BatchRenorm1d,
    "layernorm": LayerNorm,
    "groupnorm": group_norm_for,
}
NORMS_2D: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "torch": nn.BatchNorm2d,
    "bnlib": BatchNorm2d,
    "batchrenorm": BatchRenorm2d,
    "layernorm": layer_norm_over_channels,
    "groupnorm": group_norm_for,
}
# "batchrenorm" has r_max=3, d_max=5 (see bnlib.RenormSchedule for a warm-up); "groupnorm" has
# gcd(4, C) groups of channels; "layernorm" in a CNN normalises each example over (C, H, W)
# with per-channel affine parameters, as GroupNorm(1, C).

BN_POSITIONS = ("before", "after")

# How the weights of Linear and Conv2d layers start: torch's own default (uniform, std
# 1/sqrt(3 fan_in), which shrinks a ReLU network's signal layer by layer), He/Kaiming normal
# (std sqrt(2 / fan_in), which keeps it for ReLU) or Xavier/Glorot normal (std
# sqrt(2 / (fan_in + fan_out)), for tanh and sigmoid). "he" and "xavier" zero the biases.
INITS = ("default", "he", "xavier")
# The initialisation a practitioner would pick for each activation: the fair "no BN" baseline.
PRACTITIONER_INIT = {"relu": "he", "sigmoid": "xavier", "tanh": "xavier"}

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _check_choice(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(
            f"unknown {kind} {value!r}: expected one of {', '.join(map(repr, choices))}"
        )


def _seeded_build(seed: int | None, build: Callable[[], ModuleT]) -> ModuleT:
    """Run ``build`` with the CPU generator seeded by ``seed``; the global RNG state is restored."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return build()


def _hidden_block(
    in_features: int, out_features: int, activation: str, norm: str, bn_position: str
) -> list[nn.Module]:
    """Linear + activation, with the normalisation layer before or after the activation."""
    norm_factory = NORMS_1D[norm]
    if norm_factory is None:
        return [nn.Linear(in_features, out_features), ACTIVATIONS[activation]()]
    if bn_position == "before":
        # BN subtracts the batch mean, so a bias in the Linear it follows would cancel out.
        linear = nn.Linear(in_features, out_features, bias=False)
        return [linear, norm_factory(out_features), ACTIVATIONS[activation]()]
    linear = nn.Linear(in_features, out_features)
    return [linear, ACTIVATIONS[activation](), norm_factory(out_features)]


def _init_gaussian(model: nn.Module, std: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def initialise(model: nn.Module, init: str) -> nn.Module:
    """Re-draw the weights of every ``Linear`` and ``Conv2d`` of ``model`` by the rule ``init``
    (a name of :data:`INITS`) from the global generator, zero their biases, and return ``model``.
    ``"default"`` leaves the model as torch built it.
    """
    _check_choice("init", init, INITS)
    if init == "default":
        return model
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if init == "he":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_mlp(
    widths: Sequence[int] = (784, 32, 32, 10),
    *,
    activation: str = "relu",
    norm: str = "none",
    bn_position: str = "before",
    init_std: float | None = None,
    init: str = "default",
    seed: int | None = None,
) -> nn.Sequential:
    r"""Build a fully connected classifier, optionally with batch normalisation.

    Each hidden layer computes :math:`\phi(\mathrm{BN}(W x))` when ``bn_position="before"`` (the
    paper's placement; the Linear has no bias because BN's :math:`\beta` replaces it) or
    :math:`\mathrm{BN}(\phi(W x + b))` when ``bn_position="after"``. The output layer is a plain
    Linear producing logits.

    Args:
        widths: layer widths from input to output; at least two. Default: ``(784, 32, 32, 10)``.
        activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"``. Default: ``"relu"``.
        norm: ``"none"``, ``"torch"`` (``torch.nn.BatchNorm1d``), ``"bnlib"``
            (``bnlib.BatchNorm1d``) or another key of ``NORMS_1D`` (``"batchrenorm"``,
            ``"layernorm"``, ``"groupnorm"``). Default: ``"none"``.
        bn_position: ``"before"`` or ``"after"`` the activation. Default: ``"before"``.
        init_std: if given, every Linear weight is drawn from :math:`\mathcal{N}(0, \sigma^2)` with
            :math:`\sigma` = ``init_std`` and biases are zero. Default: ``None`` (torch's default).
        init: ``"default"`` (torch's), ``"he"`` (Kaiming normal, for ReLU) or ``"xavier"``
            (Glorot normal, for tanh and sigmoid); see :data:`PRACTITIONER_INIT`. Not together
            with ``init_std``. Default: ``"default"``.
        seed: if given, the weights are drawn from a generator seeded with it, leaving the global
            random state untouched. Default: ``None``.

    Shape:
        - Input: :math:`(N, 1, 28, 28)` or :math:`(N, \text{widths}[0])`.
        - Output: :math:`(N, \text{widths}[-1])`.
    """
    widths = tuple(widths)
    if len(widths) < 2:
        raise ValueError(
            f"widths needs at least 2 entries (input and output size), got {widths!r}; "
            "for example (784, 32, 32, 10)"
        )
    _check_choice("activation", activation, tuple(ACTIVATIONS))
    _check_choice("norm", norm, tuple(NORMS_1D))
    _check_choice("bn_position", bn_position, BN_POSITIONS)
    _check_choice("init", init, INITS)
    if init_std is not None and init_std <= 0:
        raise ValueError(f"init_std must be positive or None, got {init_std}")
    if init_std is not None and init != "default":
        raise ValueError(f"give init_std or init, not both (got init_std={init_std}, "
                         f"init={init!r})")
    return _seeded_build(
        seed, lambda: initialise(_mlp(widths, activation, norm, bn_position, init_std), init))


def _mlp(
    widths: tuple[int, ...], activation: str, norm: str, bn_position: str, init_std: float | None
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += _hidden_block(fan_in, fan_out, activation, norm, bn_position)
    layers.append(nn.Linear(widths[-2], widths[-1]))
    model = nn.Sequential(*layers)
    if init_std is not None:
        _init_gaussian(model, init_std)
    return model


def _check_dropout(dropout: float) -> None:
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1) (0 for no dropout layer), "
                         f"got {dropout!r}")


def _conv_stage(
    in_channels: int, out_channels: int, norm: str, bn_position: str, dropout: float
) -> list[nn.Module]:
    """3x3 convolution, ReLU and the normalisation in the order ``bn_position`` says, max
    pooling, then dropout when ``dropout > 0``."""
    norm_factory = NORMS_2D[norm]
    # BN subtracts the batch mean, so a bias in the convolution it follows would cancel out.
    bias = norm_factory is None or bn_position == "after"
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)]
    if norm_factory is None:
        layers.append(nn.ReLU())
    elif bn_position == "before":
        layers += [norm_factory(out_channels), nn.ReLU()]
    else:
        layers += [nn.ReLU(), norm_factory(out_channels)]
    layers.append(nn.MaxPool2d(2))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class SmallCNN(nn.Module):
    r"""A small convolutional classifier: conv-BN-ReLU-maxpool stages, then a Linear layer.

    Each stage is a 3x3 convolution, the normalisation, ReLU and 2x2 max pooling, so a 28x28
    image shrinks to 14x14, 7x7, 3x3, ... With ``bn_position="before"`` (the paper's placement)
    a stage computes :math:`\mathrm{pool}(\phi(\mathrm{BN}(W * x)))` and its convolution has no
    bias, which BN's :math:`\beta` replaces; with ``"after"`` it computes
    :math:`\mathrm{pool}(\mathrm{BN}(\phi(W * x + b)))`. With ``dropout`` :math:`p > 0` every stage
    ends with ``nn.Dropout(p)``, after the pooling.

    Args:
        channels: output channels of each stage; at least one. Default: ``(16, 32)``.
        norm: ``"none"``, ``"torch"`` (``torch.nn.BatchNorm2d``), ``"bnlib"``
            (``bnlib.BatchNorm2d``) or another key of ``NORMS_2D`` (``"batchrenorm"``,
            ``"layernorm"``, ``"groupnorm"``). Default: ``"bnlib"``.
        num_classes: number of output logits. Default: ``10``.
        bn_position: ``"before"`` or ``"after"`` the ReLU; ignored when ``norm="none"``.
            Default: ``"before"``.
        dropout: probability of zeroing a value in the dropout layer that ends each stage, in
            :math:`[0, 1)`; ``0`` adds no layer. Default: ``0.0``.

    Shape:
        - Input: :math:`(N, 1, 28, 28)`.
        - Output: :math:`(N, \text{num\_classes})`.
    """

    def __init__(
        self, channels: Sequence[int] = (16, 32), *, norm: str = "bnlib", num_classes: int = 10,
        bn_position: str = "before", dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 1:
            raise ValueError("channels needs at least one entry, for example (16, 32)")
        _check_choice("norm", norm, tuple(NORMS_2D))
        _check_choice("bn_position", bn_position, BN_POSITIONS)
        _check_dropout(dropout)
        layers: list[nn.Module] = []
        in_channels, side = 1, 28
        for out_channels in channels:
            layers += _conv_stage(in_channels, out_channels, norm, bn_position, dropout)
            in_channels, side = out_channels, side // 2
        if side < 1:
            raise ValueError(f"{len(channels)} pooling stages shrink a 28x28 image below 1x1")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * side * side, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def build_cnn(
    channels: Sequence[int] = (16, 32),
    *,
    norm: str = "bnlib",
    num_classes: int = 10,
    bn_position: str = "before",
    dropout: float = 0.0,
    init: str = "default",
    seed: int | None = None,
) -> SmallCNN:
    r"""Build a :class:`SmallCNN`, drawing its weights from a generator seeded with ``seed``.

    Args:
        channels: output channels of each stage. Default: ``(16, 32)``.
        norm: a key of ``NORMS_2D``, such as ``"none"``, ``"torch"``, ``"bnlib"`` or
            ``"groupnorm"``. Default: ``"bnlib"``.
        num_classes: number of output logits. Default: ``10``.
        bn_position: ``"before"`` or ``"after"`` the ReLU. Default: ``"before"``.
        dropout: dropout probability at the end of each stage, in :math:`[0, 1)`. Default: ``0.0``.
        init: ``"default"`` (torch's), ``"he"`` or ``"xavier"``, as in :func:`build_mlp`.
            Default: ``"default"``.
        seed: if given, construction leaves the global random state untouched. Default: ``None``.

    Shape:
        - Input: :math:`(N, 1, 28, 28)`.
        - Output: :math:`(N, \text{num\_classes})`.
    """
    _check_choice("init", init, INITS)
    return _seeded_build(seed, lambda: initialise(
        SmallCNN(channels, norm=norm, num_classes=num_classes, bn_position=bn_position,
                 dropout=dropout), init))
