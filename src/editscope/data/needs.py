"""Which registry datasets a study reads (``editscope data fetch --for STUDY.yaml``, ``make demo``)."""

from __future__ import annotations

from collections.abc import Iterable

from ..runner.config import DatasetEdits, StudyConfig
from .registry import file_for
from .corpora import CORPORA
from ..methods import get_method
from ..metrics.downstream import TASKS
from ..probes.datasets import DEFAULT_FILES


def _dataset_of(parts: Iterable[str]) -> str | None:
    hit = file_for("/".join(parts))
    return hit[0].name if hit else None


def _corpus(name: str) -> str | None:
    return _dataset_of(CORPORA[name][0]) if name.lower() in CORPORA else None


def datasets_for(config: StudyConfig) -> list[str]:
    """The registry datasets ``config`` reads: its dataset edits and suites (unless given a
    ``source``), key-statistics corpora of the methods that use them, perplexity and guard
    corpora, downstream tasks, and CounterFact for fact controls. Files given by path are the
    user's and not listed."""

    out: list[str | None] = []
    for e in config.edits:
        if isinstance(e, DatasetEdits) and e.source is None and e.dataset in DEFAULT_FILES:
            out.append(_dataset_of(DEFAULT_FILES[e.dataset]))
    for p in config.probes:
        if p.suite in DEFAULT_FILES and not p.args.get("source"):
            out.append(_dataset_of(DEFAULT_FILES[p.suite]))
    specs = {x.name: x for x in config.all_methods()}
    for m in config.all_methods():
        spec = specs.get(m.match, m) if m.match else m  # a placebo reads what its matched method reads
        hp_cls = get_method(spec.method).Hparams
        if "stats_corpus" in hp_cls.model_fields:
            corpora = spec.hparams.get("stats_corpus") or \
                hp_cls.model_fields["stats_corpus"].get_default(call_default_factory=True)
            out += [_corpus(c) for c in ([corpora] if isinstance(corpora, str) else corpora)]
    if config.perplexity is not None:
        out.append(_corpus(config.perplexity.corpus))
    if config.protocol.kind == "sequential" and config.protocol.guard != "off":
        out.append(_corpus(config.protocol.guard_corpus))
    for d in config.downstream:
        if d.task in TASKS:
            out.append(_dataset_of(TASKS[d.task].file))
    if config.controls is not None and config.controls.source is None:
        if config.controls.unrelated_other or any(isinstance(e, DatasetEdits) for e in config.edits):
            out.append("counterfact")
    return list(dict.fromkeys(x for x in out if x))


__all__ = ["datasets_for"]
