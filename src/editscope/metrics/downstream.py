"""Downstream ability probes: multiple-choice tasks and LAMBADA, scored the way lm-evaluation-harness
(EleutherAI, v0.4) does; tests/unit/test_harness.py checks PIQA, LAMBADA and SST-2 against the
harness (lm-eval 0.4.13) run through :mod:`editscope.metrics.harness`.

Scoring (harness ``output_type: multiple_choice``): every choice is a continuation of the context,
``context + target_delimiter + choice`` (delimiter ``" "``), scored by summed teacher-forced
log-probability with :func:`editscope.scoring.score_continuations` (one batched call for all
pairs). ``acc`` = the gold choice has the highest log-probability (first index on ties, as
``np.argmax``); ``acc_norm`` = the same after dividing each log-probability by the length of the
choice string in characters, ``len(choice)`` without the delimiter (harness ``api/task.py``:
``completion_len = [len(i) for i in choices]``). The harness's separate ``acc_bytes`` divides by
the UTF-8 byte length instead (``normalize="bytes"`` here); the two agree on ASCII choices.

LAMBADA (harness task ``lambada_openai``, ``output_type: loglikelihood``): context = the text
without its last space-separated word, target = ``" " + last word``; ``acc`` = greedy decoding
reproduces the whole target (harness ``is_greedy``, here ``ContinuationScore.greedy_match``);
``ppl`` = ``exp(-mean over items of log P(target))`` (harness ``perplexity`` aggregation: the mean
is over items, each item's log-probability summed over its tokens).

Task formats (all zero-shot by default, prompts and choices verbatim from the harness configs):

==========  ====================  =====================================================================
task        harness task          context / choices
==========  ====================  =====================================================================
piqa        piqa                  ``"Question: {goal}\\nAnswer:"`` / ``[sol1, sol2]``
hellaswag   hellaswag             harness ``preprocess(activity_label + ": " + ctx_a + " " +
                                  ctx_b.capitalize())`` / ``[preprocess(e) for e in endings]``
lambada     lambada_openai        text minus last word / ``" " + last word``
cola        cola                  ``"{sentence}\\nQuestion: Does this sentence make sense?\\nAnswer:"``
                                  / ``["no", "yes"]``
sst2        sst2                  ``"{sentence}\\nQuestion: Is this sentence positive or negative?
                                  \\nAnswer:"`` / ``["negative", "positive"]``
sentiment   sst2 (same format)    as sst2; labels are the strings "0"/"1"
mrpc        mrpc                  ``"Sentence 1: {sentence1}\\nSentence 2: {sentence2}\\nQuestion: Do
                                  both sentences mean the same thing?\\nAnswer:"`` / ``["no", "yes"]``
rte         rte                   ``"{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:"``
                                  / ``["True", "False"]`` (label 0 = entailment)
nli         rte (same format)     as rte; labels "entailment" -> 0, "not_entailment" -> 1
mmlu        mmlu (default)        ``"The following are multiple choice questions (with answers) about
                                  {subject}.\\n\\n{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"``
                                  / ``["A", "B", "C", "D"]``
dialogue    mutual                harness MuTual detokenizer on article and options / options
==========  ====================  =====================================================================

The GLUE-style files (``glue_eval/``) are the downstream probe sets of EMMET / AlphaEdit
(unified-model-editing ``glue_eval/dataset/*.pkl``). Those repositories score them with their own
prompt scripts, which are not part of the shared data; we use the harness prompt for the same task
instead, so every format here has a public, checkable source. Numbers are therefore comparable
with harness runs on the same items, not with the F1 tables of those papers. For the binary
tasks ``f1`` (positive class = label 1, sklearn's binary default as the harness) and ``mcc``
(harness ``cola`` metric) are reported from the ``acc`` predictions; for ``dialogue`` also the
harness's ``r@2`` and ``mrr``.

HellaSwag: the shared file is a text-preprocessed export (fields ``ctx``, ``endings``, ``label``;
``ctx`` already ``activity_label + ": " + ctx_a + " " + ctx_b`` with markers removed) that does not
keep ``ctx_a``/``ctx_b``, and its ``ctx_b`` is not capitalized. We restore the harness's
``ctx_b.capitalize()`` by applying ``str.capitalize`` to the trailing fragment after the last
sentence end (``". "``, ``"! "``, ``"? "``) when that fragment starts with a lower-case letter
(ActivityNet ``ctx_b`` always does; WikiHow items, whose ``ctx_b`` is empty, end with a capitalized
sentence and are left alone). Records in the original form (``activity_label``, ``ctx_a``,
``ctx_b``, ``endings``, ``label``) get the harness formula exactly.

Few-shot (``num_fewshot > 0``, off by default): shots are drawn from the same file at random
(``random.Random(f"{seed}/{item index}")``, never the item itself) and rendered as the harness
does, ``context + " " + gold choice`` joined by ``"\\n\\n"`` before the item's context (after the
MMLU description). The harness draws shots from a training/dev split where one exists; the shared
files have none, so few-shot numbers are not the harness's few-shot numbers.
"""

from __future__ import annotations

from ..registry import Registry

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.model import Model
from ..data.fetch import data_path, record_user_file
from ..scoring import score_continuations
from ..stats import Interval, wilson_interval
from ..errors import InputError

__all__ = [
    "TASKS",
    "DataFormatError",
    "LoglikelihoodResult",
    "MCExample",
    "MCResult",
    "TaskData",
    "TaskResult",
    "TaskSpec",
    "TargetExample",
    "hellaswag_preprocess",
    "hellaswag_query",
    "load_task",
    "multiple_choice",
    "mutual_detokenize",
    "run_task",
    "target_loglikelihood",
]

NORMALIZATIONS = ("chars", "bytes", "tokens", None)


class DataFormatError(InputError, ValueError):
    """A task file record lacks a field or has a value of the wrong kind."""


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def _argmax(values: Sequence[float]) -> int:
    """Index of the first maximum (``np.argmax`` semantics; a NaN is never the maximum)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best] or (math.isnan(values[best]) and not math.isnan(v)):
            best = i
    return best


@dataclass(frozen=True)
class MCResult:
    """Per-item results of :func:`multiple_choice`.

    Attributes:
        labels: gold choice index per item.
        logprobs: summed log-probability (nats) of each choice of each item.
        normalizers: what each log-probability is divided by for ``acc_norm`` (all 1.0 when
            ``normalize`` is None, making ``acc_norm == acc``).
        pred, pred_norm: chosen index per item by raw and by normalized log-probability.
        correct, correct_norm: ``pred == label`` and ``pred_norm == label`` per item.
        normalize: ``"chars"`` (harness ``acc_norm``), ``"bytes"`` (harness ``acc_bytes``),
            ``"tokens"`` (continuation tokens, delimiter included) or None.
    """

    labels: list[int]
    logprobs: list[list[float]]
    normalizers: list[list[float]]
    pred: list[int]
    pred_norm: list[int]
    correct: list[bool]
    correct_norm: list[bool]
    normalize: str | None

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def acc(self) -> float:
        return sum(self.correct) / self.n

    @property
    def acc_norm(self) -> float:
        return sum(self.correct_norm) / self.n

    def acc_interval(self, confidence: float = 0.95) -> Interval:
        """Wilson interval of ``acc``."""
        return wilson_interval(sum(self.correct), self.n, confidence)

    def acc_norm_interval(self, confidence: float = 0.95) -> Interval:
        """Wilson interval of ``acc_norm``."""
        return wilson_interval(sum(self.correct_norm), self.n, confidence)


def multiple_choice(
    model: Model,
    contexts: Sequence[str],
    choices_list: Sequence[Sequence[str]],
    labels: Sequence[int],
    *,
    normalize: str | None = "chars",
    target_delimiter: str = " ",
    batch_size: int = 256,
    max_tokens: int = 2048,
) -> MCResult:
    """Score multiple-choice items as lm-evaluation-harness ``output_type: multiple_choice`` does.

    Each ``choices_list[i][j]`` is scored as the continuation ``target_delimiter + choice`` of
    ``contexts[i]``; all pairs go to :func:`~editscope.scoring.score_continuations` in one call.
    ``acc`` takes the argmax of summed log-probability; ``acc_norm`` the argmax of log-probability
    divided by the choice's length: characters of the choice without the delimiter for
    ``"chars"`` (harness ``acc_norm``), UTF-8 bytes for ``"bytes"`` (harness ``acc_bytes``),
    continuation tokens for ``"tokens"``, nothing for None.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not (len(contexts) == len(choices_list) == len(labels)):
        raise ValueError(f"got {len(contexts)} contexts, {len(choices_list)} choice lists and "
                         f"{len(labels)} labels; they must be aligned")
    if not contexts:
        raise ValueError("multiple_choice needs at least one item")
    prompts, conts, spans = [], [], []
    for i, (ctx, choices, label) in enumerate(zip(contexts, choices_list, labels)):
        if isinstance(choices, str) or len(choices) < 2:
            raise ValueError(f"choices_list[{i}] must be a list of at least 2 choices, got {choices!r}")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
            raise ValueError(f"labels[{i}] = {label!r} is not a choice index in [0, {len(choices)})")
        for j, c in enumerate(choices):
            if not isinstance(c, str) or not c:
                raise ValueError(f"choices_list[{i}][{j}] must be a non-empty string, got {c!r}")
            prompts.append(ctx)
            conts.append(target_delimiter + c)
        spans.append(len(choices))
    scores = score_continuations(model, prompts, conts, batch_size=batch_size, max_tokens=max_tokens)

    logprobs, norms, pred, pred_norm = [], [], [], []
    k = 0
    for choices, n_choices in zip(choices_list, spans):
        item = scores[k:k + n_choices]
        k += n_choices
        lls = [s.logprob for s in item]
        if normalize == "chars":
            nz = [float(len(c)) for c in choices]
        elif normalize == "bytes":
            nz = [float(len(c.encode("utf-8"))) for c in choices]
        elif normalize == "tokens":
            nz = [float(s.n_tokens) for s in item]
        else:
            nz = [1.0] * n_choices
        logprobs.append(lls)
        norms.append(nz)
        pred.append(_argmax(lls))
        pred_norm.append(_argmax([ll / z for ll, z in zip(lls, nz)]))
    labels = [int(x) for x in labels]
    return MCResult(
        labels=labels, logprobs=logprobs, normalizers=norms, pred=pred, pred_norm=pred_norm,
        correct=[p == y for p, y in zip(pred, labels)],
        correct_norm=[p == y for p, y in zip(pred_norm, labels)],
        normalize=normalize,
    )


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Per-item results of :func:`target_loglikelihood` (harness ``output_type: loglikelihood``).

    Attributes:
        logprobs: summed log-probability of each target (nats).
        n_tokens: target tokens per item.
        greedy: greedy decoding from the context reproduces the whole target (``is_greedy``).
    """

    logprobs: list[float]
    n_tokens: list[int]
    greedy: list[bool]

    @property
    def n(self) -> int:
        return len(self.logprobs)

    @property
    def acc(self) -> float:
        return sum(self.greedy) / self.n

    @property
    def ppl(self) -> float:
        """Harness ``perplexity`` aggregation: ``exp(-mean(logprobs))`` (mean over items)."""
        return math.exp(-math.fsum(self.logprobs) / self.n)

    def acc_interval(self, confidence: float = 0.95) -> Interval:
        return wilson_interval(sum(self.greedy), self.n, confidence)


def target_loglikelihood(
    model: Model,
    contexts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 256,
    max_tokens: int = 2048,
) -> LoglikelihoodResult:
    """Log P(target | context) and greedy match per item, as the harness's ``loglikelihood``
    requests (LAMBADA: ``targets[i] = " " + last word``, scored verbatim)."""
    if len(contexts) != len(targets):
        raise ValueError(f"got {len(contexts)} contexts but {len(targets)} targets")
    if not contexts:
        raise ValueError("target_loglikelihood needs at least one item")
    scores = score_continuations(model, contexts, targets, batch_size=batch_size, max_tokens=max_tokens)
    return LoglikelihoodResult(
        logprobs=[s.logprob for s in scores], n_tokens=[s.n_tokens for s in scores],
        greedy=[s.greedy_match for s in scores],
    )


# --------------------------------------------------------------------------- #
# Formatting helpers (harness code, reproduced)
# --------------------------------------------------------------------------- #


def hellaswag_preprocess(text: str) -> str:
    """lm-eval ``tasks/hellaswag/utils.py:preprocess``: strip, ``" [title]"`` -> ``". "``, drop
    ``[...]`` WikiHow markers, collapse double spaces (once, as the harness does)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


_SENTENCE_END = re.compile(r"[.!?] ")


def hellaswag_query(ctx: str) -> str:
    """Harness query from an exported ``ctx`` (``activity_label: ctx_a ctx_b``, ``ctx_b`` not yet
    capitalized): capitalize the trailing lower-case fragment, then :func:`hellaswag_preprocess`."""
    ends = [m.end() for m in _SENTENCE_END.finditer(ctx)]
    if ends:
        cut = ends[-1]
    else:
        colon = ctx.find(": ")
        cut = colon + 2 if colon >= 0 else 0
    frag = ctx[cut:]
    if frag[:1].islower():
        ctx = ctx[:cut] + frag.capitalize()
    return hellaswag_preprocess(ctx)


def mutual_detokenize(text: str) -> str:
    """lm-eval ``tasks/mutual/utils.py`` detokenizer (same replacements, same order)."""
    for old, new in ((" '", "'"), (" \n", "\n"), ("\n ", "\n"), (" n't", "n't"), ("`` ", '"'),
                     ("''", '"'), (" :", ":"), (" ;", ";"), (" !", "!"), (" ?", "?"), (" ,", ","),
                     (" .", ".")):
        text = text.replace(old, new)
    return text


# --------------------------------------------------------------------------- #
# Task data
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class MCExample:
    """One formatted multiple-choice item. ``description`` precedes any few-shot examples."""

    context: str
    choices: tuple[str, ...]
    label: int
    index: int
    description: str = ""


@dataclass(frozen=True)
class TargetExample:
    """One formatted loglikelihood item (LAMBADA): ``target`` includes its leading space."""

    context: str
    target: str
    index: int


@dataclass(frozen=True)
class TaskData:
    """Formatted items of one task file, with the records that were skipped and why."""

    task: str
    source: str
    examples: list[Any]
    skipped: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


class _Bad(Exception):
    def __init__(self, field_name: str, problem: str):
        super().__init__(field_name, problem)
        self.field_name, self.problem = field_name, problem


def _get(rec: Mapping[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(rec, Mapping):
        raise _Bad("<record>", f"is a {type(rec).__name__}, not a JSON object")
    if name not in rec:
        raise _Bad(name, f"is missing (fields: {sorted(rec)})")
    value = rec[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _Bad(name, f"must be {want}, got {type(value).__name__} {value!r:.60}")
    if isinstance(value, str) and not value.strip():
        raise _Bad(name, "is empty")
    return value


def _label(rec: Mapping[str, Any], name: str, n_choices: int, mapping: Mapping[str, int] | None = None) -> int:
    value = _get(rec, name, (int, str))
    if mapping is not None and isinstance(value, str) and value in mapping:
        return mapping[value]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 0 <= value < n_choices:
        allowed = f"{sorted(mapping)} or " if mapping else ""
        raise _Bad(name, f"= {value!r} is not {allowed}a choice index in [0, {n_choices})")
    return value


def _choices(rec: Mapping[str, Any], name: str, n: int | None = None) -> list[str]:
    value = _get(rec, name, list)
    if (n is not None and len(value) != n) or len(value) < 2:
        raise _Bad(name, f"has {len(value)} entries, expected {n if n is not None else 'at least 2'}")
    for j, c in enumerate(value):
        if not isinstance(c, str) or not c.strip():
            raise _Bad(f"{name}[{j}]", f"must be a non-empty string, got {c!r:.60}")
    return value


def _fmt_piqa(rec, i):
    sols = [_get(rec, "sol1"), _get(rec, "sol2")]
    return MCExample(f"Question: {_get(rec, 'goal')}\nAnswer:", tuple(sols), _label(rec, "label", 2), i)


def _fmt_hellaswag(rec, i):
    if isinstance(rec, Mapping) and "ctx_a" in rec:  # original rowanz / HF form: harness formula exactly
        ctx_a, ctx_b = rec["ctx_a"], rec.get("ctx_b", "")
        if not isinstance(ctx_a, str) or not isinstance(ctx_b, str):
            raise _Bad("ctx_a" if not isinstance(ctx_a, str) else "ctx_b", "must be a string")
        query = hellaswag_preprocess(_get(rec, "activity_label") + ": " + ctx_a + " " + ctx_b.capitalize())
    else:
        query = hellaswag_query(_get(rec, "ctx"))
    endings = [hellaswag_preprocess(e) for e in _choices(rec, "endings")]
    for j, e in enumerate(endings):
        if not e:
            raise _Bad(f"endings[{j}]", "is empty after preprocessing")
    return MCExample(query, tuple(endings), _label(rec, "label", len(endings)), i)


def _fmt_lambada(rec, i):
    words = _get(rec, "text").split(" ")
    context, last = " ".join(words[:-1]), words[-1]
    if not context.strip() or not last:
        raise _Bad("text", "has no context before its last space-separated word")
    return TargetExample(context, " " + last, i)


def _binary(template: str, fields: tuple[str, ...], choices: tuple[str, str], mapping=None):
    def fmt(rec, i):
        values = {f: _get(rec, f) for f in fields}
        return MCExample(template.format(**values), choices, _label(rec, "label", 2, mapping), i)
    return fmt


_LETTERS = ("A", "B", "C", "D")


def _fmt_mmlu(rec, i):
    q = _get(rec, "question").strip()
    ch = _choices(rec, "choices", 4)
    subject = _get(rec, "subject").replace("_", " ")
    desc = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    body = q + "".join(f"\n{letter}. {c}" for letter, c in zip(_LETTERS, ch)) + "\nAnswer:"
    return MCExample(body, _LETTERS, _label(rec, "answer", 4), i, description=desc)


def _fmt_dialogue(rec, i):
    options = [mutual_detokenize(o) for o in _choices(rec, "options", 4)]
    ans = _get(rec, "answers")
    if ans not in _LETTERS:
        raise _Bad("answers", f"= {ans!r} is not one of {list(_LETTERS)}")
    return MCExample(mutual_detokenize(_get(rec, "article")), tuple(options), _LETTERS.index(ans), i)


@dataclass(frozen=True)
class TaskSpec:
    """What a task name means: file, harness counterpart, prompt and metrics."""

    name: str
    kind: str  # "multiple_choice" | "loglikelihood"
    file: tuple[str, ...]
    harness_task: str
    prompt: str
    metrics: tuple[str, ...]
    formatter: Callable[[Any, int], Any] = field(repr=False)


_COLA = "{sentence}\nQuestion: Does this sentence make sense?\nAnswer:"
_SST2 = "{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:"
_MRPC = "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Do both sentences mean the same thing?\nAnswer:"
_RTE = "{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:"
_BIN = ("acc", "acc_norm", "f1", "mcc")

TASKS: Registry[TaskSpec] = Registry("downstream task", {s.name: s for s in [
    TaskSpec("piqa", "multiple_choice", ("piqa", "valid.jsonl"), "piqa",
             'Question: {goal}\\nAnswer: / " {sol1}" | " {sol2}" (labels: valid-labels.lst)',
             ("acc", "acc_norm"), _fmt_piqa),
    TaskSpec("hellaswag", "multiple_choice", ("hellaswag", "hellaswag_val.jsonl"), "hellaswag",
             'preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()) / " " + preprocess(ending)',
             ("acc", "acc_norm"), _fmt_hellaswag),
    TaskSpec("lambada", "loglikelihood", ("lambada", "lambada_test.jsonl"), "lambada_openai",
             'text minus its last space-separated word / " " + last word', ("acc", "ppl"), _fmt_lambada),
    TaskSpec("cola", "multiple_choice", ("glue_eval", "cola.jsonl"), "cola",
             _COLA.replace("\n", "\\n") + ' / " no" | " yes"', _BIN,
             _binary(_COLA, ("sentence",), ("no", "yes"))),
    TaskSpec("sst2", "multiple_choice", ("glue_eval", "sst2.jsonl"), "sst2",
             _SST2.replace("\n", "\\n") + ' / " negative" | " positive"', _BIN,
             _binary(_SST2, ("sentence",), ("negative", "positive"))),
    TaskSpec("mrpc", "multiple_choice", ("glue_eval", "mrpc.jsonl"), "mrpc",
             _MRPC.replace("\n", "\\n") + ' / " no" | " yes"', _BIN,
             _binary(_MRPC, ("sentence1", "sentence2"), ("no", "yes"))),
    TaskSpec("rte", "multiple_choice", ("glue_eval", "rte.jsonl"), "rte",
             _RTE.replace("\n", "\\n") + ' / " True" | " False" (0 = entailment)', _BIN,
             _binary(_RTE, ("sentence1", "sentence2"), ("True", "False"))),
    TaskSpec("nli", "multiple_choice", ("glue_eval", "nli.jsonl"), "rte (format)",
             _RTE.replace("\n", "\\n") + ' / " True" | " False" (entailment / not_entailment)', _BIN,
             _binary(_RTE, ("sentence1", "sentence2"), ("True", "False"),
                     {"entailment": 0, "not_entailment": 1})),
    TaskSpec("sentiment", "multiple_choice", ("glue_eval", "sentiment_analysis.jsonl"), "sst2 (format)",
             _SST2.replace("\n", "\\n") + ' / " negative" | " positive"', _BIN,
             _binary(_SST2, ("sentence",), ("negative", "positive"))),
    TaskSpec("mmlu", "multiple_choice", ("glue_eval", "mmlu.jsonl"), "mmlu (default)",
             "The following are multiple choice questions (with answers) about {subject}.\\n\\n"
             '{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: / " A" | " B" | " C" | " D"',
             ("acc", "acc_norm"), _fmt_mmlu),
    TaskSpec("dialogue", "multiple_choice", ("glue_eval", "dialogue.jsonl"), "mutual",
             "detokenized article / \" \" + detokenized option (answers A-D)",
             ("acc", "acc_norm", "r@2", "mrr"), _fmt_dialogue),
]})


def _spec(name: str) -> TaskSpec:
    return TASKS[str(name)]


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no - 1, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}: record {line_no - 1} (line {line_no}) is not valid JSON "
                                      f"({e.msg})") from None


def _piqa_records(path: Path) -> Iterator[tuple[int, Any]]:
    """PIQA records with their label: from a ``label`` field, else from ``<stem>-labels.lst``
    beside the file (one 0/1 per line, aligned with the records)."""
    labels_path = path.with_name(f"{path.stem}-labels.lst")
    labels = labels_path.read_text(encoding="utf-8").split("\n") if labels_path.exists() else None
    if labels is not None and labels and labels[-1] == "":
        labels.pop()
    n = 0
    for i, rec in _records(path):
        n += 1
        if isinstance(rec, dict) and "label" not in rec:
            if labels is None:
                raise DataFormatError(f"{path}: record {i} has no 'label' and {labels_path} does not exist")
            if i >= len(labels):
                raise DataFormatError(f"{labels_path} has {len(labels)} labels but {path} has more records "
                                      f"(record {i} has no label)")
            rec = {**rec, "label": labels[i].strip()}
        yield i, rec
    if labels is not None and len(labels) != n:
        raise DataFormatError(f"{labels_path} has {len(labels)} labels but {path} has {n} records")


def load_task(
    name: str,
    limit: int | None = None,
    *,
    path: str | Path | None = None,
    on_bad_record: str = "raise",
) -> TaskData:
    """Formatted items of task ``name`` from its shared file (or ``path``, same format).

    ``limit`` keeps the first ``limit`` valid items in file order. A record with a missing or
    malformed field raises :class:`DataFormatError` naming the file, the record index (0-based
    line) and the field; with ``on_bad_record="skip"`` it is skipped and the reason recorded in
    :attr:`TaskData.skipped` instead.
    """
    spec = _spec(name)
    if on_bad_record not in ("raise", "skip"):
        raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    file = Path(path).expanduser() if path is not None else data_path(*spec.file)
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (task {spec.name!r})")
    if path is not None:
        record_user_file(file)  # named in the run's manifest with its hash
    reader = _piqa_records(file) if spec.name == "piqa" else _records(file)
    examples, skipped = [], []
    for i, rec in reader:
        try:
            examples.append(spec.formatter(rec, i))
        except _Bad as bad:
            msg = f"{file}: record {i} (line {i + 1}): field {bad.field_name!r} {bad.problem}"
            if on_bad_record == "raise":
                raise DataFormatError(msg) from None
            skipped.append(msg)
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataFormatError(f"{file}: no usable records for task {spec.name!r}"
                              + (f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else ""))
    return TaskData(task=spec.name, source=str(file), examples=examples, skipped=skipped)


# --------------------------------------------------------------------------- #
# run_task
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TaskResult:
    """One task on one model.

    Attributes:
        metrics: ``acc``, ``acc_norm`` (multiple choice) or ``acc``, ``ppl`` (LAMBADA), plus
            ``f1``/``mcc`` for binary tasks and ``r@2``/``mrr`` for dialogue; fractions in [0, 1]
            except ``ppl`` and ``mcc`` (in [-1, 1]).
        intervals: 95% Wilson intervals of the accuracies.
        n_skipped, skipped: malformed records left out (only with ``on_bad_record="skip"``).
        details: the per-item :class:`MCResult` or :class:`LoglikelihoodResult`.
    """

    task: str
    n: int
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    n_skipped: int
    skipped: list[str]
    num_fewshot: int
    seed: int
    limit: int | None
    seconds: float
    source: str
    harness_task: str
    prompt: str
    details: MCResult | LoglikelihoodResult = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Flat dict: every metric, each interval as ``{metric}_low``/``{metric}_high``, n, counts."""
        out: dict[str, Any] = {"task": self.task, "n": self.n, "n_skipped": self.n_skipped,
                               "num_fewshot": self.num_fewshot, "seconds": self.seconds}
        out.update(self.metrics)
        for k, iv in self.intervals.items():
            out[f"{k}_low"], out[f"{k}_high"] = iv.low, iv.high
        return out


def _binary_stats(labels: Sequence[int], pred: Sequence[int]) -> tuple[float, float]:
    """F1 of class 1 (sklearn binary default; 0.0 when undefined) and Matthews correlation
    (0.0 when undefined, as sklearn)."""
    tp = sum(1 for y, p in zip(labels, pred) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, pred) if y == 0 and p == 0)
    fp = sum(1 for y, p in zip(labels, pred) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, pred) if y == 1 and p == 0)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    return f1, mcc


def _with_shots(examples: list[Any], pool: list[Any], num_fewshot: int, seed: int) -> list[str]:
    contexts = []
    for ex in examples:
        prefix = ""
        if num_fewshot:
            if len(pool) <= num_fewshot:
                raise ValueError(f"num_fewshot={num_fewshot} needs more than {num_fewshot} items; "
                                 f"the file has {len(pool)}")
            # Like the harness sampler: draw n+1, drop the item itself, keep n.
            drawn = random.Random(f"{seed}/{ex.index}").sample(range(len(pool)), num_fewshot + 1)
            shots = [pool[j] for j in drawn if pool[j].index != ex.index][:num_fewshot]
            rendered = [s.context + (s.target if isinstance(s, TargetExample) else " " + s.choices[s.label])
                        for s in shots]
            prefix = "\n\n".join(rendered) + "\n\n"
        contexts.append(getattr(ex, "description", "") + prefix + ex.context)
    return contexts


def run_task(
    model: Model,
    name: str,
    limit: int | None = None,
    seed: int = 0,
    *,
    num_fewshot: int = 0,
    normalize: str | None = "chars",
    path: str | Path | None = None,
    on_bad_record: str = "raise",
    batch_size: int = 256,
    max_tokens: int = 2048,
) -> TaskResult:
    """Evaluate ``model`` on task ``name`` (one of :data:`TASKS`) on the first ``limit`` items.

    Zero-shot by default, in which case ``seed`` has no effect; with ``num_fewshot > 0`` it picks
    the shots (see the module docstring). ``normalize`` chooses the ``acc_norm`` length (see
    :func:`multiple_choice`). ``path`` evaluates another file in the same format.
    """
    spec = _spec(name)
    if isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise ValueError(f"num_fewshot must be a non-negative integer, got {num_fewshot!r}")
    t0 = time.perf_counter()
    if num_fewshot:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        data = load_task(spec.name, None, path=path, on_bad_record=on_bad_record)
        pool = data.examples
        examples = pool[:limit] if limit is not None else pool
    else:
        data = load_task(spec.name, limit, path=path, on_bad_record=on_bad_record)
        pool = examples = data.examples
    contexts = _with_shots(examples, pool, num_fewshot, seed)

    metrics: dict[str, float] = {}
    intervals: dict[str, Interval] = {}
    details: MCResult | LoglikelihoodResult
    if spec.kind == "loglikelihood":
        details = target_loglikelihood(model, contexts, [ex.target for ex in examples],
                                       batch_size=batch_size, max_tokens=max_tokens)
        metrics.update(acc=details.acc, ppl=details.ppl)
        intervals["acc"] = details.acc_interval()
    else:
        details = multiple_choice(model, contexts, [list(ex.choices) for ex in examples],
                                  [ex.label for ex in examples], normalize=normalize,
                                  batch_size=batch_size, max_tokens=max_tokens)
        metrics.update(acc=details.acc, acc_norm=details.acc_norm)
        intervals.update(acc=details.acc_interval(), acc_norm=details.acc_norm_interval())
        if "f1" in spec.metrics:
            metrics["f1"], metrics["mcc"] = _binary_stats(details.labels, details.pred)
        if "mrr" in spec.metrics:
            r2, rr = [], []
            for lls, y in zip(details.logprobs, details.labels):
                ranks = sorted(lls, reverse=True)
                pos = ranks.index(lls[y])
                r2.append(float(pos == 1) + float(_argmax(lls) == y))  # harness mutual r@2
                rr.append(1.0 / (pos + 1))
            metrics["r@2"], metrics["mrr"] = sum(r2) / len(r2), sum(rr) / len(rr)
    return TaskResult(
        task=spec.name, n=len(examples), metrics=metrics, intervals=intervals,
        n_skipped=data.n_skipped, skipped=list(data.skipped), num_fewshot=num_fewshot, seed=seed,
        limit=limit, seconds=time.perf_counter() - t0, source=data.source,
        harness_task=spec.harness_task, prompt=spec.prompt, details=details,
    )
