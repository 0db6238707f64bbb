"""Converters from a dataset's published file to the file editscope reads (the registry's
``convert``): each takes the downloaded bytes and returns the bytes to cache, deterministically, so
the result has a pinned hash too.

* ``hellaswag-text``: the six-lines-per-item text form of HellaSwag validation (context, label,
  four endings; bz2-compressed, as llama.cpp's perplexity tool reads it) -> JSONL
  ``{"ind", "ctx", "label", "endings"}``.
* ``pickled-records``: a pickle that holds only plain records (a list of dicts of strings and
  numbers, as the EMMET/AlphaEdit GLUE-style probes are published) -> JSONL, one record a line.
  Read with an unpickler that refuses every global, so a file that would construct any object
  (the way pickle runs code) is rejected, not executed.
"""

from __future__ import annotations

import bz2
import io
import json
import pickle
from collections.abc import Callable

from ..registry import Registry


def _jsonl(records: list) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def hellaswag_text(raw: bytes) -> bytes:
    """HellaSwag's text form (bz2) -> JSONL; a file whose line count is not a multiple of six, or
    whose label line is not 0-3, is refused."""
    lines = bz2.decompress(raw).decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"hellaswag text: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings)")
    out = []
    for i in range(0, len(lines), 6):
        ctx, label, *endings = lines[i:i + 6]
        if label not in ("0", "1", "2", "3"):
            raise ValueError(f"hellaswag text: item {i // 6} has label {label!r}, expected 0-3")
        out.append({"ind": i // 6, "ctx": ctx, "label": int(label), "endings": endings})
    return _jsonl(out)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        raise pickle.UnpicklingError(f"the file asks for {module}.{name}: only plain records (lists, dicts, strings, "
                                     "numbers) are read; refusing to construct objects")


def pickled_records(raw: bytes) -> bytes:
    """A pickled list of plain dicts -> JSONL (objects of any class are refused, never built)."""
    data = _PlainUnpickler(io.BytesIO(raw)).load()
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"pickled records: expected a list of dicts, got {type(data).__name__}")
    return _jsonl(data)


CONVERTERS: Registry[Callable[[bytes], bytes]] = Registry("data converter", {
    "hellaswag-text": hellaswag_text,
    "pickled-records": pickled_records,
})

__all__ = ["CONVERTERS", "hellaswag_text", "pickled_records"]
