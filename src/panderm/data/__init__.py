"""Datasets: CSV tables, robust image loading, benchmark class lists and prompt templates."""
from .images import image_pixel_limit, max_image_pixels, open_image, to_rgb
from .tables import ImageTable, load_table, read_csv

__all__ = ["open_image", "to_rgb", "image_pixel_limit", "max_image_pixels", "ImageTable", "load_table", "read_csv"]
