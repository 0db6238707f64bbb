"""Edit methods behind one interface (:mod:`.base`), applied and guarded by :func:`apply_edit`."""

from . import controls, defer, finetune, grace, ike, locate, lora, melo, mend, neurons, pmet, serac, ultraedit, wise  # noqa: F401  (register the methods)
from .apply import apply_edit, prepare_edits, target_losses
from .base import (
    METHODS,
    EditFailed,
    NoOpEdit,
    EditMethod,
    HparamError,
    Hparams,
    UnknownMethodError,
    get_method,
    list_methods,
    register_method,
    resolved_defaults,
)
from .handle import EditHandle, EditHandleError, EditLoadError, active_edits, load_edit

__all__ = [
    "METHODS", "EditFailed", "NoOpEdit", "EditHandle", "EditHandleError", "EditLoadError", "EditMethod", "HparamError",
    "Hparams", "UnknownMethodError", "active_edits", "apply_edit", "get_method", "prepare_edits", "list_methods", "load_edit",
    "register_method", "resolved_defaults", "target_losses",
]
