"""lm-evaluation-harness behind editscope's downstream tasks: an ``lm_eval`` language model over
editscope's scoring, so that any harness task runs on a (possibly edited) :class:`Model`, and the
harness's own task configs pointed at local data files.

    from editscope.metrics.harness import EditscopeLM, harness_task, evaluate_harness
    results = evaluate_harness(model, ["piqa", "lambada", "sst2"], limit=200)  # the shared copies
    # or any installed harness task, if its data can be reached:
    lm_eval.simple_evaluate(model=EditscopeLM(model), tasks=["arc_easy"])

:class:`EditscopeLM` answers the harness's three request kinds with editscope's one scoring path:
``loglikelihood`` with :func:`editscope.scoring.score_continuations` (continuations scored
verbatim, ``is_greedy`` = greedy decoding reproduces the whole continuation), ``generate_until``
with :func:`editscope.scoring.greedy_continuations` cut at the first stop string, and
``loglikelihood_rolling`` with :func:`editscope.metrics.perplexity.perplexity` (the first token of
a text is not predicted, where the harness predicts it after the end-of-text token).

:func:`harness_task` reads the task's YAML from the installed ``lm_eval`` package (prompts,
choices, targets and metrics verbatim) and replaces only where the documents come from: the
shared data files (``piqa``, ``lambada`` = ``lambada_openai``, ``sst2`` = GLUE SST-2), or any
JSON-lines file in the same format. tests/unit/test_harness.py checks that editscope's own
:func:`editscope.metrics.downstream.run_task` gives the same per-item log-probabilities and
accuracies as the harness run through this adapter.

Needs the ``harness`` extra (``pip install 'editscope[harness]'``, lm-eval 0.4.13).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

try:  # optional dependency: lm-evaluation-harness (the `harness` extra)
    import lm_eval
    import lm_eval.evaluator
    import lm_eval.tasks
    from lm_eval.api.model import LM
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("editscope.metrics.harness needs lm-evaluation-harness: pip install 'editscope[harness]' "
                      "(lm-eval 0.4.13)") from e

from ..data.fetch import data_path
from ..errors import InputError
from ..models.model import Model
from ..scoring import greedy_continuations, score_continuations
from .perplexity import perplexity

#: editscope task -> (the harness YAML under lm_eval/tasks, the shared data file's layout path)
HARNESS_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "piqa": ("piqa/piqa.yaml", ("piqa", "valid.jsonl")),
    "lambada": ("lambada/lambada_openai.yaml", ("lambada", "lambada_test.jsonl")),
    "sst2": ("glue/sst2/default.yaml", ("glue_eval", "sst2.jsonl")),
}


class EditscopeLM(LM):
    """An ``lm_eval`` LM that scores with editscope (``model`` as it is now: edits included).

    ``batch_size`` and ``max_tokens`` bound each scoring batch (rows, padded tokens);
    ``max_gen_toks`` caps ``generate_until`` when a request gives no ``max_gen_toks``.
    """

    def __init__(self, model: Model, *, batch_size: int = 64, max_tokens: int = 4096, max_gen_toks: int = 64):
        super().__init__()
        self.model, self.batch_size, self.max_tokens, self.max_gen_toks = model, batch_size, max_tokens, max_gen_toks

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        contexts = [r.args[0] for r in requests]
        conts = [r.args[1] for r in requests]
        scores = score_continuations(self.model, contexts, conts, batch_size=self.batch_size, max_tokens=self.max_tokens)
        return [(float(s.logprob), bool(s.greedy_match)) for s in scores]

    def loglikelihood_rolling(self, requests) -> list[float]:
        texts = [r.args[0] for r in requests]
        res = perplexity(self.model, texts, batch_size=self.batch_size)
        return [-float(nll) for nll in res.per_document_nll]

    def generate_until(self, requests) -> list[str]:
        out = []
        for r in requests:  # one at a time: each request has its own stop strings and budget
            context, kwargs = r.args[0], dict(r.args[1]) if len(r.args) > 1 else {}
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            text = greedy_continuations(self.model, [context], n, batch_size=1)[0].text
            cut = min((text.index(u) for u in until if u and u in text), default=len(text))
            out.append(text[:cut])
        return out


def harness_task(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """The harness's config of ``name`` (see :data:`HARNESS_TASKS`) as a dict for
    ``lm_eval.simple_evaluate(tasks=[...])``, reading its documents from ``path`` (JSON lines in
    the shared file's format) or the shared copy. The task is named ``editscope_<name>``."""
    if name not in HARNESS_TASKS:
        raise InputError(f"harness task {name!r}: give one of {', '.join(HARNESS_TASKS)}")
    yaml_rel, layout = HARNESS_TASKS[name]
    cfg = yaml.safe_load((Path(lm_eval.tasks.__file__).parent / yaml_rel).read_text())
    file = Path(path).expanduser() if path is not None else data_path(*layout)
    cfg.update(task=f"editscope_{name}", dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {"test": str(file)}},
               test_split="test", validation_split=None, training_split=None, fewshot_split=None)
    cfg.pop("tag", None)
    if name == "piqa":  # the shared file keeps its labels beside it, one per line (as the PIQA release)
        labels_file = file.with_name(f"{file.stem}-labels.lst")
        if labels_file.is_file():
            labels = [int(x) for x in labels_file.read_text().split()]
            cfg["process_docs"] = lambda ds: ds.map(lambda doc, i: {"label": labels[i]}, with_indices=True)
    return cfg


def evaluate_harness(model: Model, tasks: Sequence[str], *, limit: int | None = None,
                     batch_size: int = 64, log_samples: bool = False) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` of ``tasks`` (:data:`HARNESS_TASKS` names, local data) on
    ``model`` through :class:`EditscopeLM`, zero-shot, on the first ``limit`` documents; returns
    the harness's results dict (``results[task]["acc,none"]``, ...; ``samples`` with ``log_samples``)."""
    return lm_eval.simple_evaluate(model=EditscopeLM(model, batch_size=batch_size), tasks=[harness_task(t) for t in tasks],
                           limit=limit, num_fewshot=0, log_samples=log_samples, bootstrap_iters=0,
                           apply_chat_template=False)


__all__ = ["EditscopeLM", "HARNESS_TASKS", "evaluate_harness", "harness_task"]
