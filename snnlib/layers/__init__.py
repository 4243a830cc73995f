"""Layers several papers share: time-shared dropout, weight standardisation, feedback norms,
trace-gradient layers. Each family adds its own module here."""
from .dropout import SharedDropout

__all__ = ["SharedDropout"]
