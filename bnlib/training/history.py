"""What a training run records: losses and accuracies per step and per epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

__all__ = ["History"]


@dataclass
class History:
    """What happened while training one model.

    Args:
        step_loss: training loss of every step.
        train_loss: per epoch, mean of the step losses (train mode, as the optimizer saw them).
        train_acc: per epoch, fraction of training examples classified correctly during the steps.
        test_loss: per epoch, mean loss on the whole test set in eval mode.
        test_acc: per epoch, fraction of the test set classified correctly in eval mode.
        eval_step: steps at which the extra ``eval_every`` evaluations happened.
        eval_test_acc: test accuracy at those steps.
        epoch_seconds: wall-clock seconds per epoch (training steps plus evaluation).
    """

    step_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_test_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        """Return the fields as a dict of lists that strict JSON can hold.

        A non-finite value (NaN or infinity, as a diverged run records) becomes ``None``, which
        JSON writes as ``null``: ``json.dumps(history.to_dict(), allow_nan=False)`` never fails.
        """
        return {name: [None if isinstance(value, float) and not math.isfinite(value) else value
                       for value in values] for name, values in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, list]) -> History:
        """Rebuild a History from :meth:`to_dict`'s output; ``None`` is read back as NaN."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown History fields {sorted(unknown)}; expected {sorted(names)}")
        return cls(**{name: [math.nan if value is None else value for value in values]
                      for name, values in data.items()})
