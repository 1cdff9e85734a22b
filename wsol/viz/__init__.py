"""Visualization: overlays (:mod:`.overlay`), BoxAcc / precision-recall curves (:mod:`.curves`),
fg/bg activation histograms (:mod:`.histograms`), image x method grids (:mod:`.grid`) and the
self-contained HTML report page (:mod:`.report`).

Overlays use OpenCV only; the plotting modules build :class:`matplotlib.figure.Figure` objects
on the Agg canvas directly (no ``pyplot`` state, no display needed). Importing this package is
cheap: matplotlib is loaded by the plotting modules, not here.
"""

from wsol.viz.overlay import colorize_map, draw_box, draw_label, overlay_map, render_overlay

__all__ = ["colorize_map", "draw_box", "draw_label", "overlay_map", "render_overlay"]
