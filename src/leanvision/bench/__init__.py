"""Side-by-side runs of (model, method, settings) rows -> markdown tables, JSON and PNG plots."""

from .report import render_markdown, write_outputs
from .rows import BenchRow, parse_row, parse_rows
from .runner import run_rows

__all__ = ["BenchRow", "parse_row", "parse_rows", "render_markdown", "run_rows", "write_outputs"]
