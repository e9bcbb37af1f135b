"""Datasets: CSV tables, robust image loading, benchmark class lists and prompt templates."""
from .images import open_image, to_rgb
from .tables import ImageTable, load_table, read_csv

__all__ = ["open_image", "to_rgb", "ImageTable", "load_table", "read_csv"]
