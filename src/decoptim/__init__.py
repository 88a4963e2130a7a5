"""decoptim: language-model decoding as optimisation on the probability simplex."""

from .core import *  # noqa: F403
from .core import __all__ as _core_all
from .core.specs import DecoderSpec, load_plugin, parse_spec, register_decoder

__version__ = "0.1.0"
__all__ = [*_core_all, "DecoderSpec", "load_plugin", "parse_spec", "register_decoder"]
