"""Figures (matplotlib is imported only here): training histories, comparisons and sweeps
(:mod:`bnlib.plotting.histories`), and the diagnostics' histograms and ratios
(:mod:`bnlib.plotting.diagnostics`). Each takes data and an optional ``ax`` and returns the
figure. Animations that play offline in a page are in :mod:`bnlib.plotting.animation`."""

from bnlib.plotting.diagnostics import (
    plot_activation_histograms,
    plot_depth_sweep,
    plot_gradient_histograms,
    plot_saturation,
    plot_update_ratios,
)
from bnlib.plotting.histories import (
    plot_comparison,
    plot_histories,
    plot_seed_spread,
    plot_step_loss,
    plot_sweep,
)

__all__ = ["plot_activation_histograms", "plot_comparison", "plot_depth_sweep",
           "plot_gradient_histograms", "plot_histories", "plot_saturation", "plot_seed_spread",
           "plot_step_loss", "plot_sweep", "plot_update_ratios"]
