"""PanDerm toolkit: evaluate dermatology foundation models."""
__version__ = "0.1.0"
