"""Trained editors, trained once on records that are never evaluated, then used by an edit method:
MEND's weight-update network (:mod:`.mend_net`, :mod:`.mend`), SERAC's scope classifier
(:mod:`.serac`); specifications, training, resume and the cache: :mod:`.store`."""

from .store import (EditorError, EditorSpec, EditorTrainingError, LoadedEditor, MendSpec, RecordRange, SeracSpec,
                    load_editor, train_editor)

__all__ = ["EditorError", "EditorSpec", "EditorTrainingError", "LoadedEditor", "MendSpec", "RecordRange", "SeracSpec",
           "load_editor", "train_editor"]
