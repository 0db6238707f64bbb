"""Errors of trained editors."""

from __future__ import annotations

from ..errors import InputError, WorkError


class EditorError(InputError, ValueError):
    """A trained editor that cannot be used here: missing, for another model, or trained on the edit."""


class EditorTrainingError(WorkError):
    """Training diverged (a non-finite loss)."""


__all__ = ["EditorError", "EditorTrainingError"]
