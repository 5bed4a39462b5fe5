"""The one figure helper of every report: headless Agg figures at one resolution, saved as PNG.

Figures are built on matplotlib's object API with an Agg canvas, never pyplot, so rendering needs no
display, keeps no global state and is safe in worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def new_figure(width: float, height: float, **options: Any) -> Figure:
    """A figure of `width` × `height` inches on its own Agg canvas (`options` go to Figure, e.g. layout)."""
    fig = Figure(figsize=(width, height), dpi=DPI, **options)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (its folder is created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
