"""Trained editors: hypernetworks trained once per model on records that are never evaluated, then
used by an edit method (MEND: :mod:`.mend_net`, :mod:`.mend`; training and the cache: :mod:`.store`)."""

from .store import EditorError, EditorTrainingError, LoadedEditor, MendSpec, RecordRange, load_editor, train_editor

__all__ = ["EditorError", "EditorTrainingError", "LoadedEditor", "MendSpec", "RecordRange", "load_editor",
           "train_editor"]
