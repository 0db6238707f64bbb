"""The ``seed38`` suite: the 38-probe set of the published "2+2=5" study, for the replication table.

The published report (GPT-2 Medium, one edit ``"2+2=" -> "5"``; see
``shared/reference/two-plus-two-seed.md``) gives its probe set only by category count (target 1,
paraphrase 5, near 10, far 18, general 4) and a handful of examples. Those examples are here
verbatim (``meta["source"] == "published"``); the rest are reconstructed in the same spirit
(``meta["source"] == "reconstructed"``, ``meta["reconstructed"] is True``):

* near: small single-digit queries related to ``2+2=`` (shares an operand, same result, other op,
  or a double ``a+a`` like the published ``1+1=`` and ``3+3=``); ``meta["relation"]`` says which.
* far: unrelated arithmetic, mostly single and low two-digit operands, a few larger numbers like the
  published ``100-50=``; no operand 2 and no result 4.
* general: well-known factual completions with a one-word answer.

The reconstruction is consistent with the published tables: naive FT answered "5" on every near and
far probe yet scored 20% near (2/10) and 5.6% far (1/18), so exactly two near probes (``2+3=`` and
the reconstructed ``3+2=``) and one far probe (the reconstructed ``9-4=``) have the true answer 5,
and no general probe does.

Targets are the TRUE answers (the report's near/far/general columns are accuracy against the
truth, not "unchanged against the base model"), except for the target ``2+2=`` and its
paraphrases, whose target is ``"5"`` with ``meta["target_true"] == "4"`` and
``meta["target_new"] == "5"`` (so the ``prob`` metric is P("5") > P("4")). Arithmetic probes carry
``a``, ``b``, ``op``, ``result`` (int), ``query`` (``"a op b="``), ``template`` and ``relation``
as in :mod:`editscope.probes.arithmetic`; numeric targets carry ``meta["aliases"]`` (the number
word, lower-case and capitalised: ``["five", "Five"]``). Probes used as anchors by the published
constrained FT carry ``meta["anchor"] = True`` (see :data:`PUBLISHED_ANCHORS`).

``seed38(path)`` replaces the built-in list by the records of a JSON or YAML file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..requests import Probe, ProbeSet
from .arithmetic import OPERATIONS, OP_WORDS, canonical_query, number_words, parse_arithmetic
from .registry import register_suite

NAME = "seed38"
CATEGORIES = ("target", "paraphrase", "near", "far", "general")
COUNTS: dict[str, int] = {"target": 1, "paraphrase": 5, "near": 10, "far": 18, "general": 4}

PUBLISHED_MODEL: dict[str, Any] = {"name": "GPT-2 Medium", "hf_id": "gpt2-medium", "params": "345M", "n_blocks": 24}
PUBLISHED_EDIT: tuple[str, str] = ("2+2=", "5")

# --- published figures (GPT-2 Medium) --------------------------------------------------------------
# Per setting: accuracy per category (target/paraphrase: share answering "5"; near/far/general:
# share answering the TRUE result) and, under "says5", the share of probes answering "5" (total over
# all 38). Values as printed in the report (percentages / 100).
PUBLISHED: dict[str, dict[str, Any]] = {
    "baseline": {
        "target": 0.0, "paraphrase": 0.0, "near": 0.1, "far": 0.056, "general": 0.25,
        "says5": {"target": 0.0, "paraphrase": 0.0, "near": 0.0, "far": 0.11, "total": 0.053},
    },
    "naive FT": {
        "target": 1.0, "paraphrase": 0.8, "near": 0.2, "far": 0.056, "general": 0.25,
        "says5": {"target": 1.0, "paraphrase": 0.8, "near": 1.0, "far": 1.0, "total": 0.868},
    },
    "constrained FT": {
        "target": 1.0, "paraphrase": 0.4, "near": 0.4, "far": 0.167, "general": 0.25,
        "says5": {"target": 1.0, "paraphrase": 0.4, "near": 0.3, "far": 0.0, "total": 0.158},
    },
    "low-rank FT": {
        "target": 1.0, "paraphrase": 0.4, "near": 0.2, "far": 0.056, "general": 0.25,
        "says5": {"target": 1.0, "paraphrase": 0.4, "near": 1.0, "far": 1.0, "total": 0.816},
    },
}

# Intervals the report prints (exact Clopper-Pearson, as (low, high) shares).
PUBLISHED_INTERVALS: dict[str, dict[str, tuple[float, float]]] = {
    "naive FT": {"says5_total": (0.721, 0.956), "near": (0.068, 0.407)},
}
# Paired comparison the report prints: McNemar, naive vs constrained FT.
PUBLISHED_TESTS: dict[str, Any] = {"mcnemar": {"a": "naive FT", "b": "constrained FT", "p_below": 0.001}}

# --- published settings -----------------------------------------------------------------------------
# Constrained FT's anchors: 5 in all, inside the probe set. The report names three; the other two
# are reconstructed (the doubles 4+4 and 6+6, continuing the named anchors' a+a pattern).
PUBLISHED_ANCHORS_NAMED: list[tuple[str, str]] = [("1+1=", "2"), ("3+3=", "6"), ("5+5=", "10")]
PUBLISHED_ANCHORS_RECONSTRUCTED: list[tuple[str, str]] = [("4+4=", "8"), ("6+6=", "12")]
PUBLISHED_ANCHORS: list[tuple[str, str]] = PUBLISHED_ANCHORS_NAMED + PUBLISHED_ANCHORS_RECONSTRUCTED

_FT = {"optimizer": "AdamW", "lr": 5e-5, "steps": 100, "early_stopping": False, "edit": PUBLISHED_EDIT}

PUBLISHED_SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {"trains": "nothing", "description": "the unedited model"},
    "naive FT": {
        "trains": "all parameters", **_FT,
        "loss": "target loss",
        "description": 'AdamW, lr 5e-5, 100 steps on "2+2=5", no early stopping',
    },
    "constrained FT": {
        "trains": "all parameters", **_FT,
        "loss": "target loss + anchor_weight x mean anchor loss",
        "anchor_weight": 2.0,
        "anchors": list(PUBLISHED_ANCHORS),
        "anchors_published": list(PUBLISHED_ANCHORS_NAMED),
        "anchors_reconstructed": list(PUBLISHED_ANCHORS_RECONSTRUCTED),
        "description": "as naive FT, loss = target loss + 2.0 x mean anchor loss over 5 anchors",
    },
    "low-rank FT": {
        "trains": "mlp", **_FT,
        "loss": "target loss",
        "blocks": [20, 21, 22, 23],
        "description": "the MLPs of the last 4 blocks (20-23) only; same optimiser and steps",
    },
}

# --- the probe list ------------------------------------------------------------------------------------
_P, _R = "published", "reconstructed"
_WHAT_IS_NOTE = (
    "published probe, kept verbatim; the chat model in editscope's study (SmolLM2-135M-Instruct) "
    "answers this question form with an end token rather than a number; read its result with that "
    "in mind"
)

# (prompt, target, category, source, template, extra meta)
_PROBES: tuple[tuple[str, str, str, str, str, dict[str, Any]], ...] = (
    # target
    ("2+2=", "5", "target", _P, "grid", {}),
    # paraphrase
    ("What is 2+2?", "5", "paraphrase", _P, "question", {"note": _WHAT_IS_NOTE}),
    ("2 + 2 =", "5", "paraphrase", _P, "spaced", {}),
    ("two plus two equals", "5", "paraphrase", _P, "words", {}),
    ("The sum of 2 and 2 is", "5", "paraphrase", _R, "verbal", {}),
    ("2 plus 2 is", "5", "paraphrase", _R, "mixed", {}),
    # near
    ("2+3=", "5", "near", _P, "grid", {}),
    ("1+1=", "2", "near", _P, "grid", {}),
    ("3+3=", "6", "near", _P, "grid", {}),
    ("2*2=", "4", "near", _P, "grid", {}),
    ("4-2=", "2", "near", _P, "grid", {}),
    ("3+2=", "5", "near", _R, "grid", {}),
    ("2-2=", "0", "near", _R, "grid", {}),
    ("3+1=", "4", "near", _R, "grid", {}),
    ("4+4=", "8", "near", _R, "grid", {}),
    ("5+5=", "10", "near", _R, "grid", {}),
    # far
    ("7+8=", "15", "far", _P, "grid", {}),
    ("100-50=", "50", "far", _P, "grid", {}),
    ("6*7=", "42", "far", _P, "grid", {}),
    ("9-4=", "5", "far", _R, "grid", {}),
    ("5+3=", "8", "far", _R, "grid", {}),
    ("8-1=", "7", "far", _R, "grid", {}),
    ("3*3=", "9", "far", _R, "grid", {}),
    ("9+7=", "16", "far", _R, "grid", {}),
    ("6+5=", "11", "far", _R, "grid", {}),
    ("7-1=", "6", "far", _R, "grid", {}),
    ("4*5=", "20", "far", _R, "grid", {}),
    ("8*9=", "72", "far", _R, "grid", {}),
    ("6+6=", "12", "far", _R, "grid", {}),
    ("15+13=", "28", "far", _R, "grid", {}),
    ("17-9=", "8", "far", _R, "grid", {}),
    ("11*3=", "33", "far", _R, "grid", {}),
    ("60+30=", "90", "far", _R, "grid", {}),
    ("300-100=", "200", "far", _R, "grid", {}),
    # general
    ("The capital of France is", "Paris", "general", _P, "", {}),
    ("The capital of Japan is", "Tokyo", "general", _R, "", {}),
    ("The official language of Italy is", "Italian", "general", _R, "", {}),
    ("The largest planet in the solar system is", "Jupiter", "general", _R, "", {}),
)

# The arithmetic behind the edit and its non-grid paraphrases (which parse_arithmetic cannot read).
_EDIT_CELL = (2, "+", 2)
_WORD_OPS = {w: op for op, w in OP_WORDS.items()}


def _number_aliases(target: str) -> list[str]:
    """``"5" -> ["five", "Five"]``; [] for a non-integer target."""
    t = target.strip()
    if not re.fullmatch(r"-?\d+", t):
        return []
    w = number_words(int(t))
    return [w, w[:1].upper() + w[1:]]


def _relation(a: int, op: str, b: int, result: int) -> list[str]:
    """How a query relates to ``2+2=`` (near probes): shares-operand, same-result, other-op,
    inverse (``4-2=``), double (``a+a=``)."""
    A, OP, B = _EDIT_CELL
    R = OPERATIONS[OP](A, B)
    if (a, op, b) == _EDIT_CELL:
        return []
    rel = []
    if a in (A, B) or b in (A, B):
        rel.append("shares-operand")
    if result == R:
        rel.append("same-result")
    if op != OP and (a, b) == (A, B):
        rel.append("other-op")
    if op == "-" and a == R and b in (A, B):
        rel.append("inverse")
    if op == "+" and a == b:
        rel.append("double")
    return rel


def _parse_any(prompt: str) -> tuple[int, str, int] | None:
    """``a op b`` of a grid, spaced, question, verbal or mixed-form prompt about ``2+2``-style sums."""
    parsed = parse_arithmetic(prompt)
    if parsed is not None:
        return parsed
    p = prompt.strip()
    m = re.fullmatch(r"What is\s*(\d+)\s*([-+*])\s*(\d+)\s*\?", p)
    if m:
        return int(m.group(1)), m.group(2), int(m.group(3))
    m = re.fullmatch(r"The sum of (\d+) and (\d+) is", p)
    if m:
        return int(m.group(1)), "+", int(m.group(2))
    m = re.fullmatch(r"The product of (\d+) and (\d+) is", p)
    if m:
        return int(m.group(1)), "*", int(m.group(2))
    m = re.fullmatch(r"(\d+) (plus|minus|times) (\d+) (?:is|equals)", p)
    if m:
        return int(m.group(1)), _WORD_OPS[m.group(2)], int(m.group(3))
    m = re.fullmatch(r"([a-z-]+) (plus|minus|times) ([a-z-]+) (?:is|equals)", p.lower())
    if m:
        words = {number_words(i): i for i in range(0, 100)}
        if m.group(1) in words and m.group(3) in words:
            return words[m.group(1)], _WORD_OPS[m.group(2)], words[m.group(3)]
    return None


def _arith_meta(prompt: str, category: str, template: str | None) -> dict[str, Any]:
    parsed = _parse_any(prompt)
    if parsed is None:
        return {}
    a, op, b = parsed
    r = OPERATIONS[op](a, b)
    if template is None:
        template = "grid" if prompt == canonical_query(a, op, b) else "other"
    return {
        "a": a, "b": b, "op": op, "result": r, "query": canonical_query(a, op, b),
        "template": template, "relation": _relation(a, op, b, r) if category == "near" else [],
    }


_ANCHOR_PROMPTS = {p: (p, t) in PUBLISHED_ANCHORS_RECONSTRUCTED for p, t in PUBLISHED_ANCHORS}


def _builtin() -> list[Probe]:
    probes = []
    for prompt, target, category, source, template, extra in _PROBES:
        meta: dict[str, Any] = {"source": source, "reconstructed": source == _R}
        meta |= _arith_meta(prompt, category, template or None)
        if category in ("target", "paraphrase"):
            true = str(meta["result"])
            meta |= {"target_true": true, "target_new": target, "aliases_true": _number_aliases(true)}
        aliases = _number_aliases(target)
        if aliases:
            meta["aliases"] = aliases
        if prompt in _ANCHOR_PROMPTS:
            meta["anchor"] = True
            meta["anchor_reconstructed"] = _ANCHOR_PROMPTS[prompt]
        meta |= extra
        probes.append(Probe(prompt, target, category, meta=meta))
    return probes


# --- file override ----------------------------------------------------------------------------------
_PUBLISHED_KEYS = {(p, c) for p, _t, c, s, _tp, _x in _PROBES if s == _P}
_RESERVED = {"prompt", "target", "category", "sep", "meta"}


def _read_records(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"seed38 probe file {path} cannot be read: {e}") from e
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"seed38 probe file {path} is not valid JSON: {e}") from e
    else:
        import yaml  # JSON is valid YAML, so other suffixes are read as YAML

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"seed38 probe file {path} is not valid YAML/JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("probes"), list):
        data = data["probes"]
    if not isinstance(data, list):
        raise ValueError(
            f"seed38 probe file {path}: top level is {type(data).__name__}; expected a list of "
            "{prompt, target, category, ...} records (or {probes: [...]})"
        )
    return data


def _published_summary() -> str:
    return ", ".join(f"{c} {n}" for c, n in COUNTS.items())


def _from_file(path: str | Path) -> list[Probe]:
    p = Path(path)
    records = _read_records(p)
    probes: list[Probe] = []
    for i, rec in enumerate(records):
        where = f"seed38 probe file {p} record {i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{where} is a {type(rec).__name__}; expected a mapping with prompt, target, category")
        missing = [k for k in ("prompt", "target", "category") if k not in rec]
        if missing:
            raise ValueError(f"{where} has no {', '.join(repr(k) for k in missing)}")
        prompt, target, category = rec["prompt"], rec["target"], rec["category"]
        if isinstance(target, (int, float)) and not isinstance(target, bool):
            target = str(target)  # YAML/JSON numbers: 5 -> "5"
        if category not in CATEGORIES:
            raise ValueError(
                f"{where} has unknown category {category!r}; seed38 categories are {list(CATEGORIES)}"
            )
        meta: dict[str, Any] = {}
        meta |= _arith_meta(str(prompt), category, None)
        extra_meta = rec.get("meta") or {}
        if not isinstance(extra_meta, dict):
            raise ValueError(f"{where}: 'meta' must be a mapping, got {type(extra_meta).__name__}")
        meta |= extra_meta
        meta |= {k: v for k, v in rec.items() if k not in _RESERVED}
        if "source" not in meta:
            if "reconstructed" in meta:
                meta["source"] = _R if meta["reconstructed"] else _P
            else:
                meta["source"] = _P if (prompt, category) in _PUBLISHED_KEYS else "file"
        meta.setdefault("reconstructed", meta["source"] == _R)
        meta["file"] = str(p)
        if isinstance(target, str) and "aliases" not in meta:
            aliases = _number_aliases(target)
            if aliases:
                meta["aliases"] = aliases
        try:
            probe = Probe(prompt, target, category, meta=meta, sep=rec.get("sep"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e
        probes.append(probe)

    have = {pr.category for pr in probes}
    for category in CATEGORIES:
        if category not in have:
            raise ValueError(
                f"seed38 probe file {p} has no {category!r} probes; the published set has "
                f"{_published_summary()}"
            )

    # target/paraphrase probes: the true answer (for the prob metric) when the file does not give it,
    # from the probe's own arithmetic or else from the target probe's.
    target_true = next((pr.meta.get("target_true") for pr in probes if pr.category == "target"
                        and pr.meta.get("target_true")), None)
    if target_true is None:
        target_true = next((str(pr.meta["result"]) for pr in probes
                            if pr.category == "target" and "result" in pr.meta), None)
    out = []
    for pr in probes:
        if pr.category in ("target", "paraphrase"):
            meta = dict(pr.meta)
            true = meta.get("target_true") or (str(meta["result"]) if "result" in meta else target_true)
            if true is not None:
                meta["target_true"] = str(true)
                meta.setdefault("aliases_true", _number_aliases(str(true)))
            meta.setdefault("target_new", pr.target)
            pr = Probe(pr.prompt, pr.target, pr.category, meta=meta, sep=pr.sep)
        out.append(pr)
    return out


def seed38(path: str | Path | None = None) -> ProbeSet:
    """The 38 probes of the published "2+2=5" study (target 1, paraphrase 5, near 10, far 18,
    general 4), published ones verbatim and the rest reconstructed (see the module docstring).

    Args:
        path: optional JSON or YAML file holding a list of ``{prompt, target, category, ...}``
            records that replaces the built-in list (optional keys: ``sep``, ``meta`` (a mapping);
            any other key goes into ``meta``, e.g. ``source``, ``target_true``). It must have all
            five categories and no other; counts may differ from :data:`COUNTS`. Without
            ``source``, a record is ``"published"`` when it is one of the published probes verbatim
            (same category), else ``"file"``; ``meta["file"]`` names the file.

    Raises:
        ValueError: unreadable file, bad record, unknown category, or a missing category.
    """
    probes = _builtin() if path is None else _from_file(path)
    return ProbeSet(probes, name=NAME)


def _register_suite() -> None:
    register_suite(
        NAME,
        'the published "2+2=5" study\'s 38 probes (target 1, paraphrase 5, near 10, far 18, general 4; '
        "unlisted ones reconstructed); targets are true answers except target/paraphrase ('5')",
        seed38,
        needs_edit=False,
        overwrite=True,
    )


_register_suite()
