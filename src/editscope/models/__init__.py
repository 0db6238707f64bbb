"""Model loading, the packaged default model, and architecture specs."""

from .arch import ARCH_SPECS, ArchSpec, UnsupportedArchitectureError, arch_for, register_arch
from .default import DEFAULT_MODEL, DefaultModelMissingError
from .model import KNOWN_MODELS, Model, StateWatch, UnknownModelError, from_modules, load_model, weights_fingerprint
from .tiny import TINY_MODEL_TYPES, tiny_model, tiny_tokenizer

__all__ = [
    "ARCH_SPECS", "ArchSpec", "DEFAULT_MODEL", "DefaultModelMissingError", "KNOWN_MODELS", "Model", "StateWatch",
    "TINY_MODEL_TYPES", "UnknownModelError", "UnsupportedArchitectureError", "arch_for",
    "from_modules", "load_model", "register_arch", "tiny_model", "tiny_tokenizer", "weights_fingerprint",
]
