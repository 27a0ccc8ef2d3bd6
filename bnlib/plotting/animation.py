"""Animations for the book: data in, a self-contained HTML player out.

Each ``animate_*`` function takes arrays, draws on a new ``matplotlib.figure.Figure`` (which pyplot
does not track) and returns a ``FuncAnimation``; :func:`animation_html` turns one into the
JavaScript player of ``FuncAnimation.to_jshtml``, with every frame embedded as a PNG, so a page
plays it offline, with no server. Nothing here changes rcParams or pyplot's current figure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

__all__ = ["animation_html", "bn_transform_frames", "animate_point_clouds",
           "animate_percentiles", "exponential_average", "animate_running_statistics"]

DEFAULT_MAX_BYTES = 2_500_000
# matplotlib's player draws its buttons with Font Awesome, fetched from a CDN: a page read offline
# would show empty buttons. The same controls as plain characters (from blocks that common fonts
# cover: arrows, geometric shapes, punctuation) need nothing from outside.
_CDN_STYLESHEET = re.compile(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">')
_ICONS = {"fa fa-minus": "\u2212", "fa fa-plus": "+", "fa fa-pause": "\u2016",
          "fa fa-fast-backward": "\u21e4", "fa fa-fast-forward": "\u21e5",
          "fa fa-step-backward": "\u25c2", "fa fa-step-forward": "\u25b8",
          "fa fa-play fa-flip-horizontal": "\u25c0", "fa fa-play": "\u25b6"}
_ICON = re.compile(r'<i class="(fa [^"]*)"></i>')


def _plain_icon(match: re.Match) -> str:
    return f'<span aria-hidden="true">{_ICONS.get(match.group(1), "?")}</span>'


def animation_html(animation: FuncAnimation, *, max_bytes: int = DEFAULT_MAX_BYTES,
                   fps: float | None = None) -> str:
    """The animation as one HTML fragment that plays offline (every frame embedded).

    Raises ValueError, naming the size, when the fragment would exceed ``max_bytes``; matplotlib
    itself would silently drop the frames past its ``embed_limit``, so that limit is set above ours.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    with mpl.rc_context({"animation.embed_limit": 2 * max_bytes / 2**20}):
        html = animation.to_jshtml(fps=fps)
    html = _ICON.sub(_plain_icon, _CDN_STYLESHEET.sub("", html))
    size = len(html.encode())
    if size > max_bytes:
        raise ValueError(f"the animation takes {size:,} bytes, over max_bytes={max_bytes:,}: use "
                         "fewer frames, a lower dpi or a smaller figure")
    return html


def bn_transform_frames(x: np.ndarray, gamma: Sequence[float], beta: Sequence[float], *,
                        eps: float = 1e-5, frames_per_stage: int = 8) -> tuple[np.ndarray, list]:
    """Frames of a batch ``x`` (m, features) going through the stages of the BN transform.

    The stages are the batch as given, centred (minus the batch mean), normalised (divided by
    sqrt(biased variance + eps)) and scaled and shifted (gamma * x_hat + beta); between two stages
    the points move in a straight line over ``frames_per_stage`` frames. Returns the frames,
    shape (frames, m, features), and the name of the stage each frame shows or leaves.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"x must be a batch of shape (m >= 2, features), got shape {x.shape}")
    if frames_per_stage < 1:
        raise ValueError(f"frames_per_stage must be at least 1, got {frames_per_stage}")
    centred = x - x.mean(axis=0)
    x_hat = centred / np.sqrt(centred.var(axis=0) + eps)
    y = np.asarray(gamma, dtype=np.float64) * x_hat + np.asarray(beta, dtype=np.float64)
    stages = [("the batch", x), ("centred", centred), ("normalised", x_hat),
              ("scaled by \u03b3, shifted by \u03b2", y)]
    frames, names = [x], [stages[0][0]]
    for (_, start), (name, end) in zip(stages, stages[1:]):
        for fraction in np.linspace(0, 1, frames_per_stage + 1)[1:]:
            frames.append(start + fraction * (end - start))
            names.append(name)
    return np.stack(frames), names


def _animation(fig: Figure, draw: Callable[[int], object], frames: int,
               interval: int) -> FuncAnimation:
    """A looping FuncAnimation whose layout is computed once, on the first frame, then kept:
    recomputing the constrained layout for every frame would cost more than drawing it."""
    draw(0)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    return FuncAnimation(fig, draw, frames=frames, interval=interval, repeat=True)


def _limits(values: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    low, high = float(np.min(values)), float(np.max(values))
    pad = margin * (high - low) or 1.0
    return low - pad, high + pad


def animate_point_clouds(frames: np.ndarray, titles: Sequence[str], *,
                         axis_labels: tuple[str, str] = ("feature 1", "feature 2"),
                         figsize: tuple[float, float] = (4.6, 4.0), dpi: int = 72,
                         interval: int = 150) -> FuncAnimation:
    """Animate a 2-D point cloud, frames of shape (frames, points, 2), one title per frame.

    Dotted lines mark zero, a cross the cloud's mean; the axes stay fixed, so motion is motion.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[2] != 2:
        raise ValueError(f"frames must have shape (frames, points, 2), got {frames.shape}")
    if len(titles) != len(frames):
        raise ValueError(f"one title per frame: {len(titles)} titles for {len(frames)} frames")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.subplots()
    limits = _limits(np.concatenate([frames[..., 0].ravel(), frames[..., 1].ravel(), [0.0]]))
    ax.set(xlim=limits, ylim=limits, xlabel=axis_labels[0], ylabel=axis_labels[1], aspect="equal")
    ax.axhline(0, color="grey", linestyle=":", linewidth=0.8)
    ax.axvline(0, color="grey", linestyle=":", linewidth=0.8)
    cloud = ax.scatter(*frames[0].T, s=6, alpha=0.4)
    (centre,) = ax.plot(*frames[0].mean(axis=0), marker="x", color="C3", markersize=10)
    title = ax.set_title(titles[0], fontsize=10)

    def draw(index):
        cloud.set_offsets(frames[index])
        centre.set_data(*([value] for value in frames[index].mean(axis=0)))
        title.set_text(titles[index])
        return cloud, centre, title

    return _animation(fig, draw, len(frames), interval)


def animate_percentiles(steps: Sequence[int], percentiles: Mapping[str, np.ndarray], *,
                        titles: Sequence[str] | None = None,
                        curve: Callable[[np.ndarray], np.ndarray] | None = None,
                        curve_label: str = "", xlabel: str = "value",
                        figsize: tuple[float, float] = (8.0, 3.0), dpi: int = 72,
                        interval: int = 400) -> FuncAnimation:
    """Animate low, middle and high percentiles of a value over training, one panel per name.

    ``percentiles[name]`` has shape (len(steps), 3). Each frame shades the band between the low and
    high percentile and marks the middle one, on a value axis shared by all panels and frames; an
    optional ``curve`` (for example the sigmoid the value feeds; ``curve_label`` names it on the
    vertical axis) is drawn under them. ``titles``
    gives one line per frame (default: the step).
    """
    if not percentiles:
        raise ValueError("percentiles is empty: pass a dict such as {'with BN': table, ...}")
    tables = {name: np.asarray(table, dtype=np.float64) for name, table in percentiles.items()}
    for name, table in tables.items():
        if table.shape != (len(steps), 3):
            raise ValueError(f"percentiles[{name!r}] must have shape ({len(steps)}, 3), "
                             f"got {table.shape}")
    titles = list(titles) if titles is not None else [f"step {step:,}" for step in steps]
    if len(titles) != len(steps):
        raise ValueError(f"one title per step: {len(titles)} titles for {len(steps)} steps")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tables), sharex=True, sharey=True))
    low, high = _limits(np.concatenate([table.ravel() for table in tables.values()]))
    grid = np.linspace(low, high, 400)
    artists = []
    for ax, (name, table) in zip(axes, tables.items()):
        if curve is not None:
            ax.plot(grid, curve(grid), color="grey", linewidth=1)
        band = ax.axvspan(table[0, 0], table[0, 2], color="C1", alpha=0.35)
        median = ax.axvline(table[0, 1], color="black")
        ax.set(xlim=(low, high), xlabel=xlabel, title=name)
        artists.append((band, median, table))
    axes[0].set_ylabel(curve_label)
    suptitle = fig.suptitle(titles[0], fontsize=10)

    def draw(index):
        for band, median, table in artists:
            band.set_x(table[index, 0])
            band.set_width(table[index, 2] - table[index, 0])
            median.set_xdata([table[index, 1]] * 2)
        suptitle.set_text(titles[index])

    return _animation(fig, draw, len(steps), interval)


def exponential_average(values: Sequence[float], momentum: float, initial: float) -> np.ndarray:
    """PyTorch's running statistic after each value: r_t = (1 - momentum) r_(t-1) + momentum s_t."""
    if not 0 < momentum <= 1:
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")
    running, result = float(initial), []
    for value in values:
        running = (1 - momentum) * running + momentum * float(value)
        result.append(running)
    return np.array(result)


def animate_running_statistics(batch: Mapping[str, np.ndarray],
                               running: Mapping[str, Mapping[str, np.ndarray]], *,
                               frames: int = 40, figsize: tuple[float, float] = (9.0, 3.4),
                               dpi: int = 72, interval: int = 120) -> FuncAnimation:
    """Animate running statistics chasing the batch statistics over training steps.

    ``batch[stat]`` holds one batch statistic per step (grey dots); ``running[stat][label]`` one
    running statistic per step (a line each; the first panel's labels make the legend, so each
    panel should use the same labels, such as ``"momentum 0.1"``). One panel per statistic;
    frame k shows the first k / frames of the steps, with fixed axes, so the lines visibly chase
    the dots.
    """
    if set(batch) != set(running) or not batch:
        raise ValueError(f"batch and running must name the same statistics, got {sorted(batch)} "
                         f"and {sorted(running)}")
    steps = len(next(iter(batch.values())))
    traces = [np.asarray(trace) for stat in batch
              for trace in (batch[stat], *running[stat].values())]
    if any(trace.shape != (steps,) for trace in traces):
        raise ValueError(f"every statistic needs one value per step ({steps} steps)")
    if not 1 <= frames <= steps:
        raise ValueError(f"frames must be between 1 and the {steps} steps, got {frames}")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(batch)))
    step_axis = np.arange(1, steps + 1)
    drawn = []
    for ax, (stat, values) in zip(axes, batch.items()):
        dots = ax.plot([], [], ".", color="grey", markersize=3, label="batch statistic")[0]
        lines = [(ax.plot([], [], linewidth=1.6, label=label)[0], np.asarray(trace))
                 for label, trace in running[stat].items()]
        both = np.concatenate([np.asarray(values), *(trace for _, trace in lines)])
        ax.set(xlim=(0, steps + 1), ylim=_limits(both), xlabel="training step", title=stat)
        drawn.append((dots, np.asarray(values), lines))
    # One legend for all panels, below them, so that it never covers a line as the lines grow.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
               ncols=1 + len(next(iter(running.values()))), fontsize=8)
    ends = np.linspace(steps / frames, steps, frames).round().astype(int)

    def draw(index):
        end = ends[index]
        for dots, values, lines in drawn:
            dots.set_data(step_axis[:end], values[:end])
            for line, trace in lines:
                line.set_data(step_axis[:end], trace[:end])

    return _animation(fig, draw, frames, interval)
