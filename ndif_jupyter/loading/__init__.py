"""Loading models: the checkpoint cache and name resolution, and `LoadedModel`, a model ready to trace or serve."""

from .loaded import LoadedModel

__all__ = ["LoadedModel"]
