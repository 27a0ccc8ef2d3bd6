"""Figures of training histories.

Every helper takes the data and an optional Axes, draws on it (or on a new
``matplotlib.figure.Figure``, which pyplot does not track), and returns the Figure. No helper
shows a window, changes rcParams or touches pyplot's current figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlib._checks import require_int
from bnlib.training.history import History

__all__ = ["plot_histories", "plot_comparison", "plot_step_loss", "plot_seed_spread", "plot_sweep"]

_METRICS = {"accuracy": ("train_acc", "test_acc"), "loss": ("train_loss", "test_loss")}
_LABELS = {"train_acc": "train accuracy", "test_acc": "test accuracy", "train_loss": "train loss",
           "test_loss": "test loss", "eval_test_acc": "test accuracy"}


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").subplots()


def _check_histories(histories: Mapping[str, History]) -> None:
    if not histories:
        raise ValueError("histories is empty: pass a dict such as {'with BN': history, ...}")


def plot_histories(
    histories: Mapping[str, History], *, metric: str = "accuracy", ax: Axes | None = None
) -> Figure:
    """Plot a per-epoch metric of several models: training dashed, test solid.

    Args:
        histories: model name -> :class:`~bnlib.History`.
        metric: ``"accuracy"`` or ``"loss"``. Default: ``"accuracy"``.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
    _check_histories(histories)
    ax = _new_axes(ax)
    train_key, test_key = _METRICS[metric]
    for name, history in histories.items():
        test_values = getattr(history, test_key)
        epochs = np.arange(1, len(test_values) + 1)
        (line,) = ax.plot(epochs, test_values, marker="o", label=f"{name} (test)")
        ax.plot(epochs, getattr(history, train_key), linestyle="--", marker="o", markersize=3,
                color=line.get_color(), label=f"{name} (train)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend()
    return ax.figure


def plot_comparison(
    histories: Mapping[str, History], *, axes: Sequence[Axes] | None = None
) -> Figure:
    """Plot loss and accuracy per epoch side by side (1x2).

    Args:
        histories: model name -> :class:`~bnlib.History`.
        axes: two Axes, for loss and accuracy. Default: ``None`` (a new 1x2 Figure).

    Returns:
        The Figure that holds the Axes.
    """
    if axes is None:
        axes = Figure(figsize=(11.0, 4.0), layout="constrained").subplots(1, 2)
    if len(axes) != 2:
        raise ValueError(f"axes must hold 2 Axes (loss, accuracy), got {len(axes)}")
    plot_histories(histories, metric="loss", ax=axes[0])
    plot_histories(histories, metric="accuracy", ax=axes[1])
    return axes[0].figure


def _moving_average(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < window:
        return values
    cumulative = np.cumsum(np.concatenate([[0.0], values]))
    return (cumulative[window:] - cumulative[:-window]) / window


def plot_step_loss(
    histories: Mapping[str, History], *, smooth: int = 50, ax: Axes | None = None
) -> Figure:
    r"""Plot the training loss of every step, as a moving average over ``smooth`` steps.

    The point at step :math:`t` is :math:`\frac{1}{k}\sum_{s=t-k+1}^{t} \ell_s` with
    :math:`k` = ``smooth``; histories shorter than the window are drawn unsmoothed.

    Args:
        histories: model name -> :class:`~bnlib.History`.
        smooth: window of the moving average, in steps; 1 draws every step. Default: ``50``.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes.
    """
    require_int("smooth", smooth, 1, " (1 = no smoothing)")
    _check_histories(histories)
    ax = _new_axes(ax)
    for name, history in histories.items():
        averaged = _moving_average(history.step_loss, smooth)
        steps = np.arange(len(history.step_loss) - len(averaged) + 1, len(history.step_loss) + 1)
        ax.plot(steps, averaged, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({smooth}-step mean)" if smooth > 1 else "training loss")
    ax.legend()
    return ax.figure


def _stack_metric(per_seed: Sequence[Mapping[str, History]], name: str, metric: str) -> np.ndarray:
    """Values of ``metric`` for model ``name``, one row per seed."""
    rows = [getattr(histories[name], metric) for histories in per_seed]
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"{metric} of {name!r} has different lengths across seeds: "
                         f"{[len(row) for row in rows]}; train every seed for as long")
    return np.asarray(rows, dtype=float)


def plot_seed_spread(
    per_seed: Sequence[Mapping[str, History]],
    *,
    metric: str = "test_acc",
    ax: Axes | None = None,
) -> Figure:
    """Plot the mean over seeds of a metric per model, with a band from the minimum to the maximum.

    Args:
        per_seed: one ``{model name: History}`` dict per seed, all with the same names.
        metric: a per-epoch History field (``"test_acc"``, ``"test_loss"``, ``"train_acc"``,
            ``"train_loss"``) or ``"eval_test_acc"`` (drawn against ``eval_step``).
            Default: ``"test_acc"``.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes.
    """
    if metric not in _LABELS:
        raise ValueError(f"metric must be one of {sorted(_LABELS)}, got {metric!r}")
    if not per_seed:
        raise ValueError("per_seed is empty: pass one {name: History} dict per seed")
    names = list(per_seed[0])
    if any(list(histories) != names for histories in per_seed):
        raise ValueError(f"every seed must have the models {names}, in that order")
    ax = _new_axes(ax)
    for name in names:
        values = _stack_metric(per_seed, name, metric)
        if metric == "eval_test_acc":
            x, x_label = np.asarray(per_seed[0][name].eval_step), "step"
        else:
            x, x_label = np.arange(1, values.shape[1] + 1), "epoch"
        (line,) = ax.plot(x, values.mean(axis=0), marker="o" if len(x) < 30 else None,
                          label=f"{name} (mean of {len(per_seed)})")
        ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=line.get_color(),
                        alpha=0.25, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x_label)
    ax.set_ylabel(_LABELS[metric])
    ax.legend()
    return ax.figure


def _check_sweep(values: np.ndarray, results: Mapping[str, np.ndarray],
                 diverged: Mapping[str, np.ndarray]) -> None:
    if values.ndim != 1 or len(values) == 0 or not np.all(values > 0):
        raise ValueError("values must be a non-empty 1-D sequence of positive settings "
                         "(they are drawn on a log axis)")
    if not results:
        raise ValueError("results is empty: pass a dict such as {'BN': array, 'no BN': array}")
    for name, table in results.items():
        if table.ndim != 2 or table.shape[1] != len(values):
            raise ValueError(f"results[{name!r}] has shape {table.shape}; expected "
                             f"(seeds, {len(values)}): one row per seed, one column per value")
        if diverged[name].shape != table.shape:
            raise ValueError(f"diverged[{name!r}] has shape {diverged[name].shape}; expected "
                             f"{table.shape}, the shape of results[{name!r}]")


def _summary_over_seeds(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, minimum and maximum of each column over its non-NaN rows (NaN where all are NaN)."""
    some = ~np.all(np.isnan(table), axis=0)
    mean, low, high = (np.full(table.shape[1], np.nan) for _ in range(3))
    mean[some] = np.nanmean(table[:, some], axis=0)
    low[some] = np.nanmin(table[:, some], axis=0)
    high[some] = np.nanmax(table[:, some], axis=0)
    return mean, low, high


def plot_sweep(
    values: Sequence[float],
    results: Mapping[str, Sequence[Sequence[float]]],
    *,
    diverged: Mapping[str, Sequence[Sequence[bool]]] | None = None,
    xlabel: str = "learning rate",
    ylabel: str = "test accuracy",
    ax: Axes | None = None,
) -> Figure:
    """Plot a metric against a swept setting, per model: mean over seeds, min-max band, divergence.

    The setting (a learning rate, an initialisation scale) is drawn on a log axis. A NaN marks a
    run that diverged, and so does ``True`` in ``diverged``: a cross near the bottom of the Axes, in
    one row per model, marks every setting at which at least one seed diverged. The mean and the
    band leave out NaNs only.

    Args:
        values: the settings swept, positive.
        results: ``{model name: table}``, each table of shape ``(seeds, len(values))``.
        diverged: ``{model name: mask}`` of the same shapes, ``True`` for a run that diverged by
            the caller's criterion (a loss that blew up, say). Default: ``None`` (only NaNs).
        xlabel: label of the x axis. Default: ``"learning rate"``.
        ylabel: label of the y axis. Default: ``"test accuracy"``.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes.
    """
    x = np.asarray(values, dtype=float)
    tables = {name: np.asarray(table, dtype=float) for name, table in results.items()}
    masks = {name: np.asarray((diverged or {}).get(name, np.zeros(table.shape)), dtype=bool)
             for name, table in tables.items()}
    _check_sweep(x, tables, masks)
    ax = _new_axes(ax)
    any_crossed = False
    for index, (name, table) in enumerate(tables.items()):
        finite = np.where(np.isfinite(table), table, np.nan)
        mean, low, high = _summary_over_seeds(finite)
        (line,) = ax.plot(x, mean, marker="o", label=f"{name} (mean of {len(table)} seeds)")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
        crossed = (np.isnan(finite) | masks[name]).any(axis=0)
        if crossed.any():
            any_crossed = True
            # one row of crosses per model, stacked upwards from the bottom of the Axes
            row = np.full(int(crossed.sum()), 0.03 + 0.05 * index)
            ax.plot(x[crossed], row, linestyle="none", marker="x",
                    color=line.get_color(), transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"{name}: a seed diverged")
    if any_crossed:  # room below the data for the rows of crosses
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom - 0.05 * len(tables) * (top - bottom), top)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return ax.figure
