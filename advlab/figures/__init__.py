"""Figures, as PNG files: `draw` holds one function per kind of figure (matplotlib, Agg backend, written
atomically); `run` decides which figures one evaluated run gets (write_figures)."""

from advlab.figures.run import write_figures

__all__ = ["write_figures"]
