"""Edit-dataset parsers, one module per format, each registered by name as an edit dataset and a
suite: CounterFact (ROME and MEND/EasyEdit forms), zsRE (MEND form), MQuAKE, KnowEdit, plain JSONL.

Every parser has the signature ``load_X(source=None, *, limit=None, offset=0, strict=False)`` and
returns an :class:`EditDataset`: one :class:`EditCase` per record (its :class:`EditRequest` list and
its :class:`ProbeSet`) plus a :class:`LoadReport` saying how many records were read and which were
skipped and why (see :mod:`.records` for sources and skipping). A new format: a module here with a
``load_X`` decorated by :func:`register_dataset`, imported below.

Probe categories produced (every probe's ``meta`` has ``case_id``):
  * ``target``: the edit prompt; target = ``target_new``; ``meta["target_true"]``.
  * ``paraphrase``: rephrasings of the edit prompt; target = ``target_new``; ``meta["target_true"]``.
  * ``near``: neighbourhood / locality prompts; target = their own true answer;
    ``meta["target_new"]`` = the edit's new target (so ROME's NS = P(true) > P(new) is computable).
  * ``portability``: multi-hop questions; target = the new answer; ``meta["aliases"]``.
  * ``portability-hop``: MQuAKE single-hop cloze prompts of the edited chain; target = the new
    answer of that hop; ``meta["hop"]``, ``meta["aliases"]``.
  * ``attribute``: ROME attribute prompts (subjects that truly have ``target_new``);
    target = ``target_new``; ``meta["target_true"]``.
  * ``generation``: ROME generation prompts (free generation for fluency/consistency);
    target = ``target_new`` as a placeholder; ``meta["kind"] = "generation"``.
"""

from __future__ import annotations

from pathlib import Path

from . import counterfact, zsre, mquake, jsonl, knowedit  # noqa: F401  (registration order: the order they are listed in)
from .counterfact import load_counterfact
from .jsonl import load_jsonl
from .knowedit import load_knowedit
from .mquake import MQUAKE_ANSWER_TOKENS, load_mquake
from .records import (EDIT_DATASETS, EditCase, EditDataset, LoadReport, RawRecord, RecordError, is_offline,
                      register_dataset, resolve_source, suite_factory)
from .zsre import load_zsre

#: each dataset's file under the data folder (folder, file name)
DEFAULT_FILES: dict[str, tuple[str, str]] = {"counterfact": counterfact.DEFAULT_FILE, "zsre": zsre.DEFAULT_FILE,
                                             "mquake": mquake.DEFAULT_FILE}


def load_edit_dataset(name: str, source: str | Path | None = None, *, limit: int | None = None,
                      offset: int = 0) -> EditDataset:
    """The edit dataset ``name`` (one of :data:`EDIT_DATASETS`) from ``source`` (default: its file
    under the data folder, or the hub when online)."""
    loader = EDIT_DATASETS[name]  # an unknown name: UnknownNameError with the nearest
    if loader is load_jsonl and source is None:
        raise RecordError("the jsonl dataset needs a source (a .jsonl path)")
    return loader(source, limit=limit, offset=offset)


__all__ = ["DEFAULT_FILES", "EDIT_DATASETS", "EditCase", "EditDataset", "LoadReport", "MQUAKE_ANSWER_TOKENS", "RawRecord",
           "RecordError", "is_offline", "load_counterfact", "load_edit_dataset", "load_jsonl", "load_knowedit",
           "load_mquake", "load_zsre", "register_dataset", "resolve_source", "suite_factory"]
