"""Layers several papers share: time-shared dropout, weight standardisation, feedback norms,
trace-gradient layers. Each family adds its own module here."""
from .dropout import SharedDropout
from .feedback_norm import feedback_norm, power_iterate, spectral_reparam  # noqa: F401  (IDE feedback constraint)
from .windows import WindowGrid  # noqa: F401  (minimum latency; projections in .projection)
from .weight_standardization import ScaledWSConv2d, ScaledWSLinear  # noqa: F401  (OTTT's scaled WS)

__all__ = ["SharedDropout"]
