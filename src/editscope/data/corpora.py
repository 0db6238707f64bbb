"""Text corpora by name (ME-PPL, WikiText-2) or from a file, as lists of documents: what
perplexity, key statistics and derived-model recipes read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..registry import Registry
from .fetch import data_path, record_user_file

#: Named corpora: name -> (path parts under the shared data folder, description).
CORPORA: Registry[tuple[tuple[str, ...], str]] = Registry("corpus", {
    "me_ppl_50": (("me_ppl", "ME-PPL_50.json"), "ME-PPL, 50 sentences (Yang et al. 2024)"),
    "me_ppl_1k": (("me_ppl", "ME-PPL_1k.json"), "ME-PPL, 1,000 sentences"),
    "me_ppl": (("me_ppl", "ME-PPL.json"), "ME-PPL, 10,000 sentences"),
    "wikitext2": (("wikitext2", "wiki.test.raw"), "WikiText-2 raw test split as one document"),
})


def _wikitext_document(path: Path) -> str:
    """WikiText raw test text joined the way the HF perplexity guide does.

    The guide evaluates ``"\\n\\n".join(test["text"])`` where each row of the HF dataset is one
    line of ``wiki.test.raw`` with its ``"\\n"`` and whitespace-only lines are empty rows. We rebuild
    exactly that from the raw file (any line ending). The shared copy has lost the 1,467 empty rows
    of the original 4,358, so on it the text differs from the published one by those rows' extra
    ``"\\n\\n"`` separators; numbers are close to, not identical with, published WikiText-2 PPL.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    rows = [line + "\n" if line.strip() else "" for line in lines]
    return "\n\n".join(rows)


def _texts_from_records(records: Any, source: str, field_names: tuple[str, ...]) -> list[str]:
    if not isinstance(records, list):
        raise ValueError(f"{source}: expected a JSON list of strings or of objects with a text field, "
                         f"got {type(records).__name__}")
    out = []
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            out.append(rec)
            continue
        if isinstance(rec, dict):
            for f in field_names:
                if f in rec:
                    value = rec[f]
                    if not isinstance(value, str):
                        raise ValueError(f"{source}: record {i} field {f!r} must be a string, "
                                         f"got {type(value).__name__}")
                    out.append(value)
                    break
            else:
                raise ValueError(f"{source}: record {i} has no {' or '.join(map(repr, field_names))} "
                                 f"field (fields: {sorted(rec)})")
            continue
        raise ValueError(f"{source}: record {i} must be a string or an object with a "
                         f"{field_names[0]!r} field, got {type(rec).__name__}")
    return out


def load_corpus(name_or_path: str, limit: int | None = None) -> list[str]:
    """The documents of a named corpus or a file, in order (the first ``limit`` when given).

    Names: ``"me_ppl_50"``, ``"me_ppl_1k"``, ``"me_ppl"`` (10k sentences; each record's ``Text``
    is one document) and ``"wikitext2"`` (the raw test split as ONE document, as the standard
    evaluation does; see :func:`_wikitext_document`). Files: ``.txt`` (the whole file is one
    document), ``.json`` (a list of strings or of objects with ``"Text"``/``"text"``), ``.jsonl``
    (one object with ``"text"``/``"Text"`` or one JSON string per line).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    key = str(name_or_path)
    if key.lower() in CORPORA:
        parts, _ = CORPORA[key.lower()]
        path = data_path(*parts)
        if key.lower() == "wikitext2":
            docs = [_wikitext_document(path)]
        else:
            docs = _texts_from_records(json.loads(path.read_text(encoding="utf-8")), str(path), ("Text", "text"))
    else:
        path = Path(key).expanduser()
        if path.suffix.lower() not in (".txt", ".json", ".jsonl", ".raw") or not path.is_file():
            names = ", ".join(sorted(CORPORA))
            why = "no such file" if path.suffix.lower() in (".txt", ".json", ".jsonl", ".raw") else "unknown corpus"
            raise ValueError(
                f"{why}: {key!r}. Known corpora: {names}; or pass a path to a .txt (one document), "
                ".json (list of strings or of {\"Text\": ...}) or .jsonl ({\"text\": ...} per line) file. "
                "To score a single text, pass a list: perplexity(model, [text])."
            )
        record_user_file(path)  # named in the run's manifest with its hash
        if path.suffix.lower() in (".txt", ".raw"):
            docs = [path.read_text(encoding="utf-8")]
        elif path.suffix.lower() == ".json":
            docs = _texts_from_records(json.loads(path.read_text(encoding="utf-8")), str(path), ("Text", "text"))
        else:
            records = []
            with path.open(encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}: line {line_no} is not valid JSON ({e.msg})") from None
                    if limit is not None and len(records) >= limit:
                        break
            docs = _texts_from_records(records, str(path), ("text", "Text"))
    return docs if limit is None else docs[:limit]


__all__ = ["CORPORA", "load_corpus"]
