"""PanDerm toolkit: evaluate dermatology foundation models.

    from panderm import PanDerm2, load_encoder
"""
__version__ = "0.1.0"

__all__ = ["Model", "PanDerm2", "load_encoder", "__version__"]


def __getattr__(name):
    # Lazy: `import panderm` stays cheap (no torch import) for the command line's help.
    if name in ("Model", "PanDerm2"):
        from . import api

        return getattr(api, name)
    if name == "load_encoder":
        from .models import load_encoder

        return load_encoder
    raise AttributeError(name)
