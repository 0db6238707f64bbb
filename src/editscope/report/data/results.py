"""Read a run folder and compute what the report shows: per-method headline metrics with 95%
intervals, paired exact McNemar tests against a reference method (Holm-corrected), perplexity and
downstream changes, sequential curves. Numbers come only from the results store; rates, summaries,
breakdowns and paired tests are aggregated over the rows' DataFrame (:mod:`.frame`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from ...metrics.edit_metrics import METRICS
from ...probe_versions import require_one_version
from ...runner.config import StudyConfig
from ...runner.plan import CONTROL_OWN_PREFIX, CONTROL_TARGET
from ...runner.store import FILENAME, ResultsStore, StoreError
from ...stats import cmh_paired, holm, mcnemar_exact, mean_interval, tost, verdict
from ...methods.base import is_no_op
from .frame import Cell, RowFrame, paired_values, summarize_frame, unit_root, values_cell

T = TypeVar("T")

CATEGORY_ORDER = ("target", "paraphrase", "portability", "near", "far", "general", "control-target")
#: what should change: the edit's prompt and its generalisations, and an unrelated-edit control's own
#: prompt (``control-target``: did the control edit take?)
EFFICACY = {"target", "paraphrase", "portability", "portability-hop", "control-target"}
LEAK = "leak"  # pseudo-category: output rate of the edit target on locality probes
LOCALITY = "locality"  # pseudo-category: every probe of a locality category (all but EFFICACY)
#: suffix of a (pseudo-)category restricted to the probes the base model answers correctly (``far+known``,
#: ``locality+known``): on a model that knows the ground truth, locality asks whether it still does
KNOWN = "+known"


def split_known(cat: str) -> tuple[str, bool]:
    """``("far", True)`` for ``"far+known"``; ``(cat, False)`` for a plain category."""
    return (cat[: -len(KNOWN)], True) if cat.endswith(KNOWN) else (cat, False)


def is_control_own(cat: str) -> bool:
    """An unrelated-edit control's own neighbourhood (``control-near``, ...): compared only with the
    study edit's own category (:mod:`editscope.report.symmetric`), never pooled or tabled."""
    return cat.startswith(CONTROL_OWN_PREFIX) and cat != CONTROL_TARGET


def is_locality(cat: str) -> bool:
    """Whether probes of ``cat`` should not change: neither efficacy nor a control's own neighbourhood."""
    return cat not in EFFICACY and not is_control_own(cat)


def locality_mask(cats: pd.Series) -> pd.Series:
    """:func:`is_locality` over a column of categories."""
    return ~cats.isin(EFFICACY) & ~(cats.str.startswith(CONTROL_OWN_PREFIX) & (cats != CONTROL_TARGET))


#: weight-change scalars (see editscope.metrics.weight_change): reported in their own table
ANATOMY_PREFIXES = ("delta:", "cumulative:")


def headline_metric(category: str) -> str:
    """The metric a category is judged by: ``answer_hit`` for what should change (the answer read
    by the probe's rule is the target; the token-level ``top1`` stays in the detail table), and
    ``answer_unchanged`` for what should not (the answer, e.g. the number, identical to the base
    model's own; the output-level ``unchanged`` stays in the pooled columns and the detail table)."""
    return "answer_hit" if category in EFFICACY else "answer_unchanged"


def parse_stored_config(config: dict[str, Any]) -> StudyConfig | None:
    """The stored study config as a :class:`StudyConfig`, parsed once per report; None for a
    config written by another version that no longer validates (its plain labels still report)."""
    try:
        return StudyConfig.model_validate(config)
    except Exception:  # noqa: BLE001 - any validation failure means "another version"
        return None


def planned_labels(config: dict[str, Any], study: StudyConfig | None) -> list[str]:
    """Every method label a stored study runs, controls included, in run order."""
    if study is not None:
        return [m.name for m in study.all_methods()]
    return [m.get("label") or m["method"] for m in config.get("methods", [])]


@dataclass
class Column:
    key: str            # e.g. "target/top1", "leak/says_target", "ppl:me_ppl_50", "piqa:acc"
    label: str
    higher_is_better: bool
    cells: dict[str, Cell | None] = field(default_factory=dict)  # method -> cell
    headline: bool = True  # in the main table (else only in the downstream detail table)
    short: str = ""        # terminal header

    def best(self, among: list[str] | None = None) -> str | None:
        vals = {m: c.value for m, c in self.cells.items()
                if c is not None and m != "base" and (among is None or m in among)}
        if not vals:
            return None
        return (max if self.higher_is_better else min)(vals, key=vals.get)


#: the equivalence margin of the paired tests' "no effect" verdicts (a difference of rates)
EQUIVALENCE_MARGIN = 0.02


@dataclass
class Test:
    """A paired comparison of ``method`` against a reference on the same probes: ``diff`` = method
    minus reference; ``p`` from ``kind`` (``"mcnemar"``: exact McNemar over the probes of one edit,
    conditional on these probes; ``"edits"``: a t-test over the edits' mean paired differences, each
    edit one observation, with ``p_cmh``, the within-edit comparison combined across edits by
    Cochran-Mantel-Haenszel, beside it); ``p_tost``: equivalence within :data:`EQUIVALENCE_MARGIN`
    (TOST over the edits' mean differences when several, else over probes). ``p_holm``/``p_tost_holm``: Holm
    over every test of the table."""

    method: str
    column: str
    n: int
    n01: int
    n10: int
    diff: float
    p: float
    p_holm: float = 1.0
    kind: str = "mcnemar"
    n_edits: int = 1
    p_tost: float = 1.0
    p_tost_holm: float = 1.0
    margin: float = EQUIVALENCE_MARGIN
    p_cmh: float | None = None

    @property
    def verdict(self) -> str:
        """equivalent / different / different, within margin / inconclusive (Holm-adjusted, 0.05)."""
        return verdict(self.p_holm, self.p_tost_holm)


def adjust(tests: list[Test]) -> list[Test]:
    """Holm over the tests of one table, for both the difference and the equivalence p-values."""
    if tests:
        for t, p, q in zip(tests, holm([t.p for t in tests]), holm([t.p_tost for t in tests])):
            t.p_holm, t.p_tost_holm = p, q
    return tests


@dataclass
class CriterionRow:
    """One method against the study's ``criterion`` (efficacy, paraphrase and locality bars)."""

    method: str
    efficacy: Cell | None     # target answer_hit
    paraphrase: Cell | None   # paraphrase answer_hit
    locality: Cell | None     # answer unchanged over all non-target probes
    meets: bool               # every point estimate clears its bar
    meets_lower: bool         # meets, and locality's 95% lower bound clears its bar too


@dataclass
class StudyResults:
    run_dir: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    methods: list[str]
    frame: RowFrame  # every stored row; as dicts: :attr:`rows`
    scalars: list[dict[str, Any]]
    events: list[dict[str, Any]]
    units: list[Any]
    n_units_planned: int | None
    columns: list[Column]
    tests: list[Test]
    reference: str | None
    controls: dict[str, tuple[str, str]] = field(default_factory=dict)
    study: StudyConfig | None = None  # ``config`` parsed (None: written by a version that no longer validates)
    #: values derived from the (read-only) rows, computed once: see :meth:`cached`
    _cache: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    def cached(self, key: tuple, make):
        """``make()`` computed once per key: the rows do not change after loading."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def margin(self) -> float:
        """The study's equivalence margin (``equivalence_margin``, default :data:`EQUIVALENCE_MARGIN`)."""
        return float(self.config.get("equivalence_margin") or EQUIVALENCE_MARGIN)

    @property
    def strength_units(self) -> list[Any]:
        """Units run at matched strength (``strength:``), reached or not."""
        return [u for u in self.units if "strength_p" in u.info]

    @property
    def edit_methods(self) -> list[str]:
        """The methods that are not controls (placebo, identity, unrelated edits)."""
        return [m for m in self.methods if m not in self.controls]

    @property
    def n_edits(self) -> int:
        """Distinct study edits (single protocol: edit units of the first edit method)."""
        if self.protocol != "single":
            return 1
        first = next(iter(self.edit_methods), None)
        if first is None:
            return 1
        return self.cached(("n_edits", first),
                           lambda: int(self.frame.df.loc[self.final_index(first), "root"].nunique()))

    @property
    def clustered(self) -> bool:
        """Intervals over edits (cluster bootstrap, the edit as the cluster) instead of over probes."""
        return self.n_edits >= 2

    @property
    def interval_note(self) -> str:
        if self.clustered:
            return (f"95% intervals over edits: cluster bootstrap with each of the {self.n_edits} edits as a "
                    "cluster (2000 resamples; where every edit gives the same value, a Wilson interval over the "
                    "edits instead)")
        return "95% intervals over probes (Wilson) for this one edit: they say nothing about other edits"

    @property
    def partial(self) -> bool:
        return self.meta.get("status") != "complete"

    @property
    def protocol(self) -> str:
        return self.config.get("protocol", {}).get("kind", "single")

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row as the dicts :meth:`ResultsStore.rows` returns (built once, on first use:
        aggregations use :attr:`frame`)."""
        return self.cached(("rows",), self.frame.to_rows)

    def final_index(self, method: str) -> pd.Index:
        """The frame labels of :meth:`final_rows`."""
        def make() -> pd.Index:
            df = self.frame.df
            idx = df.index[df["method"] == method]
            if self.protocol == "sequential" and method != "base" and len(idx):
                steps = df.loc[idx, "step"]
                idx = idx[steps == steps.max()]
            return idx

        return self.cached(("final_index", method), make)

    def final_rows(self, method: str) -> list[dict[str, Any]]:
        """The rows a method is summarised by: all its units (single/batch), or the last evaluated
        step (sequential), as dicts."""
        return self.cached(("final_rows", method), lambda: self.frame.to_rows(self.final_index(method)))

    def scalar_values(self) -> dict[tuple[str, str, int], dict[str, float]]:
        """``(method, unit, step) -> {scalar name: value}`` over every stored scalar with a value, in
        storage order (computed once). The base model's are under method ``"base"``."""
        def make() -> dict[tuple[str, str, int], dict[str, float]]:
            out: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
            for s in self.scalars:
                if s["value"] is not None:
                    out[(s["method"], s["unit"], s["step"])][s["name"]] = float(s["value"])
            return dict(out)

        return self.cached(("scalar_values",), make)

    def base_scalars(self) -> dict[str, float]:
        """The base model's scalars by name (perplexities, downstream accuracies)."""
        out: dict[str, float] = {}
        for (m, _, _), v in self.scalar_values().items():
            if m == "base":
                out.update(v)
        return out

    def memo(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()`` once per ``key`` for these results (tables a report and a figure share)."""
        cache = self.__dict__.setdefault("_memo", {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def summary(self, method: str) -> dict[str, dict[str, dict[str, float]]]:
        """:func:`editscope.metrics.summarize` of the method's final rows."""
        return self.cached(("summary", method), lambda: summarize_frame(
            self.frame, self.final_index(method), self.config.get("metrics")))


def index_cell(res: StudyResults, index: pd.Index, metric: str) -> Cell | None:
    """``metric`` over the frame rows ``index``, a rate or a mean as the metric is: Wilson (rate) or
    t (mean) interval over probes, or a cluster bootstrap over edits when the study has several
    (:attr:`StudyResults.clustered`)."""
    return values_cell(res.frame.metric(metric).loc[index],
                       res.frame.df.loc[index, "root"] if res.clustered else None, METRICS[metric].kind)


def category_index(res: StudyResults, index: pd.Index, cat: str) -> pd.Index:
    """The labels of ``index`` in a category or pseudo-category (:data:`LEAK`, :data:`LOCALITY`), either
    restricted by :data:`KNOWN` to the probes whose base answer is right."""
    cat, known = split_known(cat)
    if known:
        return known_only(res, category_index(res, index, cat))
    df = res.frame.df
    cats = df.loc[index, "category"]
    if cat == LEAK:
        keep = locality_mask(cats) & df.loc[index, "says_target"].notna()
    elif cat == LOCALITY:
        keep = locality_mask(cats)
    else:
        keep = cats == cat
    return index[keep.to_numpy()]


def known_only(res: StudyResults, index: pd.Index) -> pd.Index:
    """The labels of ``index`` whose probe the base model answers correctly (``base_known``)."""
    return index[(res.frame.metric("base_known").loc[index] == 1).to_numpy()]


def category_rows(res: StudyResults, method: str, cat: str) -> list[dict[str, Any]]:
    """A method's final rows (as dicts) in a category or pseudo-category: :func:`category_index`'s."""
    return res.frame.to_rows(category_index(res, res.final_index(method), cat))


def _columns(res: StudyResults) -> list[Column]:
    df = res.frame.df
    cats = sorted((c for c in df["category"].unique() if not is_control_own(c)),
                  key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else len(CATEGORY_ORDER), c))
    cols = []
    everyone = ["base", *res.methods]
    for cat in cats:
        metric = headline_metric(cat)
        col = Column(f"{cat}/{metric}", f"{cat} {metric}", True, short=cat[:10])
        for m in everyone:
            col.cells[m] = index_cell(res, category_index(res, res.final_index(m), cat), metric)
        cols.append(col)
    if len([c for c in cats if is_locality(c)]) > 1:
        known = res.frame.metric("answer_unchanged_known").loc[category_index(res, res.final_index("base"), LOCALITY)]
        pooled = [("answer_unchanged", "locality answer unchanged (all non-target probes)", "locality"),
                  ("unchanged", "locality output unchanged", "output")]
        if known.notna().any():  # ground truth the base model knows: the headline locality
            pooled.insert(0, ("answer_unchanged_known", "locality answer unchanged where the base model is right",
                              "known"))
        for metric, label, short in pooled:
            col = Column(f"{LOCALITY}/{metric}", label, True, short=short)
            for m in everyone:
                col.cells[m] = rate_cell(res, m, LOCALITY, metric)
            cols.append(col)
    if "says_target" in df and df["says_target"].notna().any():
        col = Column(f"{LEAK}/says_target", "target output rate (locality probes)", False, short="says target")
        for m in everyone:
            col.cells[m] = rate_cell(res, m, LEAK, "says_target")
        cols.append(col)
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    last_step: dict[str, int] = {}
    for s in res.scalars:
        if s["name"] == "guard_ppl" or s["value"] is None or s["name"].startswith(ANATOMY_PREFIXES):
            continue
        if res.protocol == "sequential" and s["method"] != "base":
            last_step[s["method"]] = max(last_step.get(s["method"], 0), s["step"])
    for s in res.scalars:
        if s["name"] == "guard_ppl" or s["value"] is None or s["name"].startswith(ANATOMY_PREFIXES):
            continue
        if res.protocol == "sequential" and s["method"] != "base" and s["step"] != last_step.get(s["method"]):
            continue
        by[s["name"]][s["method"]].append(float(s["value"]))
    for name, per in sorted(by.items(), key=lambda kv: (not kv[0].startswith("ppl:"), kv[0])):
        lower = name.startswith("ppl:") or name.endswith(":ppl")
        is_ppl = name.startswith("ppl:")
        col = Column(name, name.replace("ppl:", "perplexity ") if is_ppl else name, not lower,
                     headline=is_ppl or name.endswith(":acc"), short="ppl" if is_ppl else name.split(":")[0])
        for m in everyone:
            vals = per.get(m)
            if vals:
                iv = mean_interval(vals) if len(vals) > 1 else None
                v = statistics.fmean(vals)
                col.cells[m] = Cell(v, iv.low if iv else v, iv.high if iv else v, len(vals))
            else:
                col.cells[m] = None
        cols.append(col)
    return cols


def _paired(res: StudyResults, method: str, ref: str, cat: str, metric: str
            ) -> tuple[list[bool], list[bool], list[str]]:
    """``ref``'s and ``method``'s values of ``metric`` on the probes of ``cat`` both have (the same
    unit, probe set and index; sequential: the same probe set and index at each one's last step),
    and the edit (protocol unit root) each pair belongs to."""
    keys = ("probe_set", "index") if res.protocol == "sequential" else ("unit", "probe_set", "index")

    def keyed(m: str) -> pd.Series:
        return res.cached(("paired", m, cat, metric), lambda: res.frame.keyed(
            category_index(res, res.final_index(m), cat), keys, metric))

    ka, kb = keyed(ref), keyed(method)
    a, b = paired_values(ka, kb)
    roots = res.frame.key_roots(keys).loc[ka.index.intersection(kb.index)]
    return a.tolist(), b.tolist(), roots.tolist()


def paired_test(res: StudyResults, method: str, ref: str, cat: str, metric: str) -> Test | None:
    """``method`` against ``ref`` on ``metric`` over ``cat`` (one test, p not adjusted: ``p_holm`` =
    ``p``): a t-test over the edits' mean paired differences when the study has several (the
    Cochran-Mantel-Haenszel p beside it), else exact McNemar over the one edit's probes; with the
    TOST equivalence test beside it. None without paired probes or for an unknown metric."""
    if metric not in METRICS:
        return None
    a, b, roots = _paired(res, method, ref, cat, metric)
    if not a:
        return None
    t = mcnemar_exact(a, b)
    diffs = [float(y) - float(x) for x, y in zip(a, b)]
    n_edits = len(set(roots))
    margin = res.margin
    if res.clustered and n_edits >= 2:
        eq = tost(diffs, margin, clusters=roots)
        kind, p, p_cmh = "edits", eq.p_difference, cmh_paired(a, b, roots).pvalue
    else:
        eq = tost(diffs, margin)
        kind, p, p_cmh = "mcnemar", t.pvalue, None
    return Test(method, f"{cat}/{metric}", len(a), t.n01, t.n10, (sum(b) - sum(a)) / len(a), p, p, kind, n_edits,
                eq.p_equivalence, eq.p_equivalence, margin, p_cmh)


def _tests(res: StudyResults) -> list[Test]:
    if res.reference is None:
        return []
    tests = []
    for col in res.columns:
        cat, _, metric = col.key.partition("/")
        if metric not in ("answer_hit", "top1", "unchanged", "answer_unchanged", "says_target"):
            continue
        for m in res.edit_methods:
            if m == res.reference:
                continue
            t = paired_test(res, m, res.reference, cat, metric)
            if t is not None:
                tests.append(t)
    return adjust(tests)


def load_results(run_dir: str | Path, reference: str | None = None, *, read_only: bool = False) -> StudyResults:
    """Everything the report needs from ``run_dir`` (a folder written by ``editscope run``);
    ``read_only``: the store is opened for reading only (see :class:`ResultsStore`)."""
    run_dir = Path(run_dir)
    store = ResultsStore(run_dir / FILENAME, read_only=read_only)
    try:
        with store.snapshot():  # a study may be writing the store: read one state of it
            meta, units, scalars, events = store.meta(), store.units(), store.scalars(), store.events()
            frame = RowFrame.read(store)
        config = meta.get("config", {})
        study = parse_stored_config(config)
        planned = planned_labels(config, study)
        if not units:
            raise StoreError(f"{run_dir}: the run {meta.get('name')!r} has no finished unit yet (it stopped before the "
                             f"base model was evaluated), so there is nothing to report; continue it with `editscope run "
                             f"CONFIG --out {run_dir} --resume`")
        present = {u.method for u in units}
        methods = [m for m in planned if m in present]
        if reference is not None and reference != "base" and reference not in methods:
            raise ValueError(f"--reference {reference!r} has no results in {run_dir}; have {['base', *methods]}")
        # a partial run may not have reached the study's reference yet: test against the first method
        stored_ref = config.get("reference") if config.get("reference") in methods else None
        ref = reference or stored_ref or (methods[0] if methods else None)
        require_one_version(frame.df, str(run_dir))  # nothing compares units measured on other probes
        # a unit run at matched strength that did not reach its level is reported, never averaged in
        frame = frame.without({(u.method, u.unit) for u in units if u.info.get("strength_reached") is False})
        # an edit refused as a no-op (the base already gives its target) was never made: its rows are
        # the base model's and would count as a success; it is left out of every number
        frame = frame.without({(u.method, u.unit) for u in units if u.status == "failed" and is_no_op(u.info.get("error"))})
        res = StudyResults(run_dir, meta, config, methods, frame, scalars, events, units,
                           None, [], [], ref, study.control_map() if study else {}, study)
    finally:
        store.close()
    res.columns = _columns(res)
    res.tests = _tests(res)
    return res


def _metric_for(cat: str, metric: str | None) -> str:
    """The metric a rate over ``cat`` uses: the given one (checked) or the category's default."""
    metric = metric or ("says_target" if cat == LEAK else headline_metric(cat))
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return metric


def rate_cell(res: StudyResults, method: str, cat: str, metric: str | None = None,
              where: dict[str, str] | None = None) -> Cell | None:
    """A method's rate of ``metric`` (default the category's headline metric) over a category or
    pseudo-category (:data:`LOCALITY`, :data:`LEAK`), with its 95% Wilson interval. ``where``
    keeps only probes whose ``meta`` matches every ``{key: value}`` (values compared as text; a
    list-valued entry matches when one element does), e.g. ``{"op": "+", "b": "2"}``."""
    metric = _metric_for(cat, metric)

    def make() -> Cell | None:
        idx = category_index(res, res.final_index(method), cat)
        if where:
            idx = idx[res.frame.meta_mask(idx, where).to_numpy()]
        return index_cell(res, idx, metric)

    return res.cached(("rate_cell", method, cat, metric, tuple(sorted((where or {}).items()))), make)


def breakdown(res: StudyResults, cat: str, key: str, metric: str | None = None) -> dict[str, dict[str, Cell | None]]:
    """``{value of meta[key]: {method: Cell}}`` over a category or pseudo-category: where an edit
    leaks (e.g. ``near`` by ``relation``, ``locality`` by ``op`` or ``template``). A list-valued meta
    entry counts the probe under each of its elements; probes without the key are left out.
    Values are ordered by how many probes they hold (most first)."""
    metric = _metric_for(cat, metric)
    return res.cached(("breakdown", cat, key, metric), lambda: _breakdown(res, cat, key, metric))


def _breakdown(res: StudyResults, cat: str, key: str, metric: str) -> dict[str, dict[str, Cell | None]]:
    everyone = ["base", *res.methods]
    groups = {m: res.frame.meta_groups(category_index(res, res.final_index(m), cat), key) for m in everyone}
    empty = pd.Index([], dtype=res.frame.df.index.dtype)
    values = {x for g in groups.values() for x in g}
    order = sorted(values, key=lambda x: (-len(groups["base"].get(x, empty)), x))
    return {x: {m: index_cell(res, groups[m].get(x, empty), metric) for m in everyone} for x in order}


def criterion_rows(res: StudyResults) -> list[CriterionRow]:
    """Every edited method checked against ``config.criterion``; empty when the study sets none."""
    crit = res.config.get("criterion")
    if not crit:
        return []
    bars = {"efficacy": crit["efficacy"], "paraphrase": crit["paraphrase"], "locality": crit["locality"]}
    out = []
    for m in res.edit_methods:
        cells = {"efficacy": rate_cell(res, m, "target"), "paraphrase": rate_cell(res, m, "paraphrase"),
                 "locality": rate_cell(res, m, LOCALITY)}
        meets = all(c is not None and c.value >= bars[k] - 1e-12 for k, c in cells.items())
        # Confidence is asked of the locality claim (thousands of probes); efficacy rests on one or a
        # few target probes, whose interval cannot clear a bar of 1 however the edit behaves.
        lower = meets and cells["locality"].low >= bars["locality"] - 1e-12
        out.append(CriterionRow(m, cells["efficacy"], cells["paraphrase"], cells["locality"], meets, lower))
    return out


def sequential_curves(res: StudyResults) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per method: ``ppl`` (guard or configured perplexity per step) and ``retention`` (``answer_hit``
    on the target probes of earlier edits, at each evaluated step)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for m in res.methods:
        ppl = sorted((s["step"], s["value"]) for s in res.scalars
                     if s["method"] == m and s["value"] is not None and (s["name"] == "guard_ppl" or s["name"].startswith("ppl:")))
        df = res.frame.df
        earlier = df[(df["method"] == m) & (df["category"] == "target") & df["edit_index"].notna()]
        earlier = earlier[(earlier["edit_index"] < earlier["step"] - 1).to_numpy(dtype=bool)]
        hit = res.frame.metric("answer_hit").loc[earlier.index]
        kept = (hit == 1).groupby(earlier["step"].to_numpy()).mean()  # no answer counts as not kept
        ret = sorted((int(st), float(v)) for st, v in kept.items())
        out[m] = {"ppl": ppl, "retention": ret}
    return out


__all__ = ["EQUIVALENCE_MARGIN", "KNOWN", "split_known", "adjust", "Cell", "Column", "CriterionRow", "StudyResults", "Test", "breakdown", "category_index", "criterion_rows",
           "category_rows", "headline_metric", "index_cell", "known_only", "load_results", "rate_cell", "sequential_curves", "unit_root"]
