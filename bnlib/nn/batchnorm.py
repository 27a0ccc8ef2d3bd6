r"""Batch normalisation modules, drop-in replacements for :class:`torch.nn.BatchNorm1d` / ``2d``.

Parameters, buffers, ``state_dict`` keys and their order match torch's, so state dicts load both
ways; the normalisation itself is :func:`bnlib.batch_norm`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnlib.nn.functional import BACKWARD_MODES, batch_norm


class _BatchNorm(nn.Module):
    r"""Shared machinery of :class:`BatchNorm1d` and :class:`BatchNorm2d`.

    Subclasses set ``accepted_dims`` (the input ranks they take) and ``input_description``
    (the shape, for error messages).

    Args:
        num_features (int): number of channels :math:`C`.
        eps (float, optional): added to the variance for numerical stability. Default: ``1e-5``.
        momentum (float or None, optional): running-statistics update factor; ``None`` gives a
            cumulative moving average. Default: ``0.1``.
        affine (bool, optional): learn :math:`\gamma` and :math:`\beta`. Default: ``True``.
        track_running_stats (bool, optional): keep running statistics for evaluation; when
            ``False`` batch statistics are used in evaluation too. Default: ``True``.
        device, dtype (optional): where and in which dtype the tensors are created, as in torch.
            Default: ``None``.
        bias (bool, keyword-only, optional): with ``affine=True``, also learn :math:`\beta`;
            ``False`` keeps :math:`\gamma` only (``bias`` is then ``None``), as in torch.
            Default: ``True``.
        backward (str, keyword-only, optional): ``"manual"`` (hand-derived backward) or
            ``"autograd"``. Default: ``"manual"``.
    """

    _version = 2  # same state-dict version as torch: version 2 added num_batches_tracked
    accepted_dims: tuple[int, ...] = ()
    input_description: str = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        backward: str = "manual",
    ) -> None:
        super().__init__()
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}.")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.backward = backward
        self._register_tensors(device, dtype, bias)
        self.reset_parameters()

    def _register_tensors(self, device, dtype, bias: bool) -> None:
        """Create weight, bias, running_mean, running_var, num_batches_tracked in torch's order."""
        factory = {"device": device, "dtype": dtype}
        for name, wanted in (("weight", self.affine), ("bias", self.affine and bias)):
            value = nn.Parameter(torch.empty(self.num_features, **factory)) if wanted else None
            self.register_parameter(name, value)
        buffers = {
            "running_mean": torch.zeros(self.num_features, **factory),
            "running_var": torch.ones(self.num_features, **factory),
            "num_batches_tracked": torch.tensor(0, dtype=torch.long, device=device),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value if self.track_running_stats else None)

    def reset_running_stats(self) -> None:
        """Set running_mean to 0, running_var to 1 and num_batches_tracked to 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and set weight to 1 and bias to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        # State dicts before version 2 lack num_batches_tracked: start it at 0, as torch does.
        key = prefix + "num_batches_tracked"
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

    def check_input(self, input: Tensor) -> None:
        """Raise a ValueError, saying what to change, unless ``input`` has an accepted rank and
        ``num_features`` channels."""
        if input.dim() not in self.accepted_dims:
            raise ValueError(
                f"{type(self).__name__} expected {self.input_description} input, got "
                f"{input.dim()}D input of shape {tuple(input.shape)}; reshape the input or use the "
                "BatchNorm class that matches its rank."
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expected {self.num_features} channels "
                f"in dim 1, got {input.shape[1]} (input shape {tuple(input.shape)}); make "
                "num_features equal the number of channels."
            )

    def next_average_factor(self) -> float:
        """Count a training batch and return the factor of its running-statistics update.

        Torch's rule: ``momentum``, or with ``momentum=None`` the cumulative average's
        ``1 / num_batches_tracked``. Only a training batch with running statistics is counted.
        """
        if not (self.training and self.track_running_stats):
            return 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def forward(self, input: Tensor) -> Tensor:
        self.check_input(input)
        factor = self.next_average_factor()
        # Batch statistics in training, and in eval too when there are no running statistics.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # Running statistics are passed only when they are to be used or updated.
        pass_running = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if pass_running else None,
            self.running_var if pass_running else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
            backward=self.backward,
        )


class BatchNorm1d(_BatchNorm):
    r"""Batch normalisation over a 2D or 3D input, a drop-in for :class:`torch.nn.BatchNorm1d`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics are per channel over the batch (and length) dims; see :class:`_BatchNorm` for the
    arguments (``num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None, *, bias=True, backward="manual"``).

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, L)`.
        - Output: same shape as the input.
    """

    accepted_dims = (2, 3)
    input_description = "2D (N, C) or 3D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    r"""Batch normalisation over a 4D input, a drop-in for :class:`torch.nn.BatchNorm2d`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics are per channel over the batch and both spatial dims; see :class:`_BatchNorm` for
    the arguments (``num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None, *, bias=True, backward="manual"``).

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: same shape as the input.
    """

    accepted_dims = (4,)
    input_description = "4D (N, C, H, W)"

