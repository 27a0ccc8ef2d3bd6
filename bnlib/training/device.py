"""Which torch device a run uses, checked before any work starts."""

from __future__ import annotations

import torch

__all__ = ["default_device", "check_device"]


def default_device() -> torch.device:
    """Return ``cuda`` when a CUDA device is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from None


def check_device(device: str | torch.device | None) -> torch.device:
    """Return ``device`` as a ``torch.device`` after checking that this machine has it.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ... Default: ``None``
            (:func:`default_device`).

    Raises:
        ValueError: ``device`` is not a torch device name, or this torch build or machine lacks it.
    """
    if device is None:
        return default_device()
    resolved = _parse_device(device)
    try:
        torch.empty(0, device=resolved)
        if resolved.type == "meta":
            raise RuntimeError("a meta tensor holds no values to train on")
    except NotImplementedError:
        reason = f"this build of torch has no {resolved.type} backend"
    except (AssertionError, RuntimeError) as error:
        reason = str(error).split(". ")[0] or type(error).__name__
    else:
        return resolved
    raise ValueError(f"device {device!r} is not available here ({reason}); use "
                     f"'cpu', or leave the device unset to use {default_device()}")
