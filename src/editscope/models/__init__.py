"""Model loading, the packaged default model, and architecture specs."""

from .arch import ARCH_SPECS, ArchSpec, UnsupportedArchitectureError, arch_for, register_arch
from .packaged import DEFAULT_MODEL, PACKAGED_MODELS, DefaultModelMissingError, PackagedModelMissingError
from .model import KNOWN_MODELS, Model, UnknownModelError, from_modules, load_model
from .state import ModelState, StateWatch, weights_fingerprint
from .tiny import TINY_MODEL_TYPES, tiny_model, tiny_tokenizer

__all__ = [
    "ARCH_SPECS", "ArchSpec", "DEFAULT_MODEL", "DefaultModelMissingError", "KNOWN_MODELS", "Model", "ModelState", "PACKAGED_MODELS",
    "PackagedModelMissingError", "StateWatch",
    "TINY_MODEL_TYPES", "UnknownModelError", "UnsupportedArchitectureError", "arch_for",
    "from_modules", "load_model", "register_arch", "tiny_model", "tiny_tokenizer", "weights_fingerprint",
]
