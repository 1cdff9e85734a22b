"""Matplotlib figures on the Agg canvas without ``pyplot`` (no global state, no display)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsol.utils.io import atomic_write


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure encoded as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_jpeg(fig: Figure, dpi: int = 100, quality: int = 88) -> bytes:
    """The figure encoded as JPEG bytes (photographic figures such as image grids: several
    times smaller than PNG)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality, "optimize": True})
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write the figure as a PNG file atomically."""
    data = figure_png(fig, dpi)
    return atomic_write(path, lambda f: f.write(data))
