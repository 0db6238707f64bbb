"""Hard-case mining: edit every case of a dataset on the base model, keep the ones that wreck perplexity.

"The Butterfly Effect of Model Editing" mines the single edits that collapse a model (perplexity on
ME-PPL_50 above a threshold). :func:`mine` runs it as an ordinary study (single protocol, the
dataset's edits, perplexity after each, no probes) in a store folder, so a killed miner resumes
where it stopped and its per-edit weight-change anatomy is stored too; then it writes the cases
whose perplexity reached ``threshold`` (or ``ratio`` x the base model's; or, with ``top``, the ``top``
highest whatever they reached: the hard cases of a model none of whose edits collapses) as a dataset file in the
source's own record form (CounterFact, zsRE, ...), each record carrying a ``mined`` block with the
provenance (model fingerprint, method, hyperparameters, corpus, thresholds, its perplexity).
Studies load the file like any dataset of that kind; one loaded with another model gets a warning
naming both fingerprints.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .metrics.perplexity import check_thresholds
from .runner.config import StudyConfig, parse_config
from .runner.execute import run_study
from .runner.plan import build_plan
from .runner.store import FILENAME, ResultsStore
from .data.fetch import data_path
from .probes import datasets

log = logging.getLogger(__name__)

DATASETS = ("counterfact", "zsre", "mquake", "jsonl")


@dataclass
class MineResult:
    out: Path
    store: Path
    n_cases: int
    n_failed: int
    base_ppl: float
    kept: list[dict[str, Any]]  # the written records (with their ``mined`` block)

    def summary(self) -> str:
        return (f"{len(self.kept)} of {self.n_cases} edits kept ({self.n_failed} rolled back), base perplexity "
                f"{self.base_ppl:.2f}; written to {self.out}")


def _raw_records(dataset: str, source: str | None) -> dict[str, Any]:
    """``record label -> raw record`` of the dataset file (labels as the loaders give them)."""

    default = (lambda: Path(str(source))) if dataset == "jsonl" else (lambda: data_path(*datasets.DEFAULT_FILES[dataset]))
    _, raws = datasets.resolve_source(source, default, "train", prefer_jsonl=dataset == "jsonl")
    return {r.label: r.obj for r in raws}


def mine_config(dataset: str, method: str, *, model: str = "smollm2-135m", source: str | None = None,
                limit: int | None = None, offset: int = 0, corpus: str = "me_ppl_50",
                hparams: dict[str, Any] | None = None, preset: str | None = None) -> StudyConfig:
    """The study :func:`mine` runs (single protocol, the dataset's edits without probes, perplexity
    on ``corpus`` after each), named ``mine-METHOD[-PRESET]-DATASET``: a YAML study equal to it
    (``examples/butterfly_mine.yaml``) shares its store, so either resumes the other."""
    return parse_config({
        "name": f"mine-{method}-{preset + '-' if preset else ''}{dataset}", "model": model,
        "methods": [{"method": method, "hparams": hparams or {}, **({"preset": preset} if preset else {})}],
        "edits": [{"dataset": dataset, "source": source, "limit": limit, "offset": offset, "case_probes": False}],
        "perplexity": {"corpus": corpus}, "protocol": {"kind": "single"}}, where="mine")


def mine(dataset: str, method: str, out: str | Path, *, model: str = "smollm2-135m", source: str | None = None,
         limit: int | None = None, offset: int = 0, corpus: str = "me_ppl_50", threshold: float = 1000.0,
         ratio: float | None = None, top: int | None = None, hparams: dict[str, Any] | None = None,
         preset: str | None = None, store: str | Path | None = None, force: bool = False,
         progress: bool = True) -> MineResult:
    """Mine ``dataset`` (``counterfact`` | ``zsre`` | ``mquake`` | ``jsonl``) with ``method`` and
    write the kept cases to ``out`` (JSON list). ``store``: the resumable study folder (default
    ``<out>.mining``). A case is kept when its perplexity on ``corpus`` is >= ``threshold`` or,
    with ``ratio``, >= ``ratio`` x the base model's, or, with ``top``, when it is among the ``top``
    highest-perplexity edits; the file lists the kept cases from the highest perplexity down.
    ``preset``: reference hyperparameters under ``hparams`` (``editscope.methods.presets``), recorded
    in the study as a study's ``preset:`` key is, so a YAML study with the same method entry resumes
    the same store.
    Refuses an existing ``out`` unless ``force``."""
    if dataset not in DATASETS:
        raise InputError(f"dataset={dataset!r}: mine one of {', '.join(DATASETS)}")
    if top is not None and top < 1:
        raise InputError(f"top={top}: keep at least 1 edit (the N highest-perplexity edits), or leave it out")
    check_thresholds(threshold, ratio if ratio is not None else 2.0)
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force (force=True) to overwrite it, or choose another output file")
    store = Path(store) if store is not None else out.with_name(out.name + ".mining")
    config = mine_config(dataset, method, model=model, source=source, limit=limit, offset=offset, corpus=corpus,
                         hparams=hparams, preset=preset)

    plan = build_plan(config)
    if not plan.edits:
        raise InputError(f"{dataset} {source or '(default file)'}: no record has the fields an edit needs "
                         "(prompt, target_new; CounterFact also subject, ground_truth); nothing to mine")
    run_study(config, store, resume=(store / FILENAME).exists(), progress=progress)
    s = ResultsStore(store / FILENAME)
    try:
        fingerprint = s.get_meta("model_fingerprint")
        scalars = s.scalars()
        units = {u.unit: u for u in s.units()}
    finally:
        s.close()
    key = f"ppl:{corpus}"
    base = next(x["value"] for x in scalars if x["method"] == "base" and x["name"] == key)
    raws = _raw_records(dataset, source)
    measured = sorted(((float(x["value"]), units[x["unit"]]) for x in scalars
                       if x["method"] != "base" and x["name"] == key and x["value"] is not None
                       and units[x["unit"]].status != "failed"),  # rolled back: the base model's perplexity
                      key=lambda pu: (-pu[0], pu[1].unit))
    kept = []
    for rank, (ppl, u) in enumerate(measured, 1):
        if ppl >= threshold or (ratio is not None and ppl >= ratio * base) or (top is not None and rank <= top):
            item = plan.edits[u.edits[0]]
            record = dict(raws[item.meta["record"]])
            record["mined"] = {"ppl": ppl, "base_ppl": base, "corpus": corpus, "threshold": threshold, "ratio": ratio,
                               "top": top, "rank": rank, "of": len(measured), "method": method, "preset": preset,
                               "hparams": config.methods[0].hparams, "model": model, "model_fingerprint": fingerprint,
                               "source": source or f"{dataset} (default)", "unit": u.unit}
            kept.append(record)
    failed = sum(u.method != "base" and u.status == "failed" for u in units.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(kept, indent=1, ensure_ascii=False))
    tmp.replace(out)
    return MineResult(out, store, len(plan.edits), failed, base, kept)


