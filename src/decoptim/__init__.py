"""decoptim: language-model decoding as optimisation on the probability simplex."""

from .core import *  # noqa: F403
from .core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = list(_core_all)
