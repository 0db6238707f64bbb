"""The study file: one YAML document describing a whole experiment, validated by pydantic.

    name: two-plus-two
    model: smollm2-135m            # or {name: ..., dtype: float32}
    seed: 0
    methods:                       # a name, or {method, label, hparams}; a method may repeat
      - ft
      - {method: ft, label: ft-last4-mlp, hparams: {layers: [26, 27, 28, 29], modules: [mlp]}}
    edits:                         # inline requests and/or dataset slices
      - {prompt: "2+2=", target_new: "5", subject: "2+2"}
      - {dataset: counterfact, limit: 20}
    probes:                        # suites evaluated after every edit (needs_edit suites get the edit)
      - {suite: arithmetic, args: {n: 20}}
      - facts
    perplexity: {corpus: me_ppl_50}
    downstream: [{task: piqa, limit: 100}]
    protocol: {kind: sequential, eval_when: every_k, k: 10, guard: stop, threshold: 1000}

Errors name the file, the key path, what was expected and what was given
(:class:`ConfigError`); unknown keys are refused everywhere.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ..registry import PluginError, load_plugins
from ..methods.base import HparamError, check_hparams, get_method
from ..probes.registry import lookup_suite
from ..errors import InputError
from ..methods.strength import check_level
from ..methods.presets import with_preset
from ..probes.datasets import EDIT_DATASETS
from ..metrics.answers import ANSWER_RULES
from ..metrics.edit_metrics import METRICS


class ConfigError(InputError, ValueError):
    """A study file that cannot be run; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """The model every unit edits (a bare string is its ``name``)."""

    name: str = Field("smollm2-135m", description="a built-in or derived model (editscope models), a hub id or a "
                                                  "local folder of safetensors weights")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights' dtype while editing "
                                                                                    "and evaluating")
    device: str | None = Field(None, description="torch device, e.g. cuda:0 (default: cpu)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) of a hub model")
    trust_remote_code: bool = Field(False, description="run a hub model's own modelling code (off unless asked)")


CONTROL_METHODS = frozenset({"placebo", "identity"})


#: placebo hyperparameters the runner sets from ``match:`` and ``draws:``
RUNNER_SET_HPARAMS = ("match", "match_hparams", "match_seed", "match_strength", "draw")


#: keys added to a section's entries after studies were stored; left out of the config hash while unset
LATER_KEYS = {"methods": ("strength",), "edits": ("generate",), "probes": ("answer_rule",),
              "controls": ("own_probes",), "protocol": ("score_on", "general_every", "track_first")}
#: top-level keys that change only how a stored run is reported (not part of the config hash)
REPORT_ONLY = ("criterion", "equivalence_margin")


def without_unset_later_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A dumped config without the keys added after studies were stored (:data:`LATER_KEYS`) that
    its entries leave unset (in place), so that stored studies keep their config hash."""
    for section, keys in LATER_KEYS.items():
        entries = data.get(section) or []
        for entry in [entries] if isinstance(entries, dict) else entries:
            for key in keys:
                if isinstance(entry, dict) and entry.get(key) is None:
                    entry.pop(key, None)
    return data


class StrengthSpec(_Strict):
    """Matched strength: the method's weight delta scaled until mean P(target | prompt) is ``p``
    (:mod:`editscope.methods.strength`)."""

    p: float = Field(description="the P(target | prompt) to reach, strictly between 0 and 1")
    tolerance: float = Field(0.01, gt=0, lt=1, description="how close the achieved P(target) must come")

    @field_validator("p")
    @classmethod
    def _probability(cls, v: float) -> float:
        return check_level(v)


class MethodSpec(_Strict):
    """One method setting (a bare string is its ``method``)."""

    method: str = Field(description="a registered edit method or control (editscope methods; placebo, identity)")
    label: str | None = Field(None, description="name in tables; default the method name (must be unique)")
    hparams: dict[str, Any] = Field(default_factory=dict, description="the method's hyperparameters over its "
                                    "defaults (unknown names are refused with the nearest ones)")
    preset: str | None = Field(None, description="reference hyperparameters (easyedit, rome-paper: "
                               "editscope.methods.presets) under `hparams`; merged into `hparams` when read")
    match: str | None = Field(None, description="placebo: the label of the method whose delta it matches")
    draws: int = Field(1, ge=1, description="placebo: random draws per unit")
    sweep: dict[str, list[Any]] | None = Field(
        None, description="one hyperparameter and its values: the method runs once per value, labelled "
                          "'<label>@<param>=<value>' (a matched-strength sweep)")
    strength: StrengthSpec | None = Field(
        None, description="matched strength: scale the weight delta to P(target | prompt) = p, e.g. {p: 0.9}; "
                          "a unit that cannot reach it is marked and left out of every aggregate")

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        get_method(v)  # UnknownMethodError with a suggestion
        return v

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """``hparams`` over the preset's settings for the method (the preset stays recorded)."""
        if not isinstance(data, dict) or data.get("preset") is None or not isinstance(data.get("method"), str):
            return data

        try:
            hparams = with_preset(data["method"], data["preset"], data.get("hparams") or {})
        except (KeyError, ValueError) as e:
            raise ValueError(f"preset: {e}") from None
        return {**data, "hparams": hparams}

    @model_validator(mode="after")
    def _control_keys(self):
        is_placebo = get_method(self.method).name == "placebo"
        if is_placebo and self.match is None:
            raise ValueError("method 'placebo' needs `match:` (the label of the method whose delta it matches, "
                             "e.g. {method: placebo, match: rome, draws: 5})")
        if not is_placebo and self.match is not None:
            raise ValueError(f"`match:` applies to method 'placebo' only (got it on {self.method!r})")
        if not is_placebo and self.draws != 1:
            raise ValueError(f"`draws:` applies to method 'placebo' only (got it on {self.method!r})")
        for key in RUNNER_SET_HPARAMS:
            if is_placebo and key in self.hparams:
                raise ValueError(f"hparams.{key}: set by the runner from `match:` and `draws:`; remove it")
        self._check_hparams()
        if self.sweep is not None:
            self._check_sweep()
        if self.strength is not None and (is_placebo or get_method(self.method).kind != "weights"):
            raise ValueError(f"strength: applies to weight-delta methods; {self.method!r} "
                             f"{'is a control' if is_placebo else 'edits by ' + get_method(self.method).kind + ' intervention'}"
                             " (remove `strength:` for it)")
        return self

    def _check_hparams(self) -> None:
        """Every hyperparameter is one the method has, with a valid value: a typo stops the study
        at --dry-run, not after the methods before it have run."""
        try:
            check_hparams(self.method, self.hparams)
        except HparamError as e:
            raise ValueError("; ".join(f"hparams.{line.strip()}" for line in str(e).splitlines()[1:])) from None

    def _check_sweep(self) -> None:
        cls = type(get_method(self.method))
        if cls.name in CONTROL_METHODS:
            raise ValueError(f"sweep: a control ({cls.name!r}) has no strength to sweep; sweep the method it matches")
        if len(self.sweep) != 1:
            raise ValueError(f"sweep: give exactly one hyperparameter and its values (got {sorted(self.sweep)})")
        (key, values), = self.sweep.items()
        fields = sorted(cls.Hparams.model_fields)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"sweep.{key}: not a hyperparameter of {cls.name!r}.{hint} Valid: {', '.join(fields)}")
        if key in self.hparams:
            raise ValueError(f"sweep.{key}: also set in hparams; give it in one place")
        if not values or len(set(map(json.dumps, values))) != len(values):
            raise ValueError(f"sweep.{key}: give a list of distinct values (got {values!r})")
        for v in values:
            try:
                cls.Hparams(**{**self.hparams, key: v})
            except ValidationError as e:
                msg = "; ".join(err["msg"] for err in e.errors() if tuple(err["loc"][:1]) == (key,)) or None
                if msg:
                    raise ValueError(f"sweep.{key}: value {v!r} is invalid for {cls.name!r}: {msg}") from None

    def expand(self) -> list[MethodSpec]:
        """The method itself, or one spec per value of its ``sweep`` (labels ``<label>@<k>=<v>``)."""
        if self.sweep is None:
            return [self]
        (key, values), = self.sweep.items()
        return [MethodSpec(method=self.method, label=f"{self.name}@{key}={v}", hparams={**self.hparams, key: v})
                for v in values]

    # Keys added after studies were first stored are left out while at their defaults, so that
    # the config hash of an existing study does not change.
    @model_serializer(mode="wrap")
    def _compact(self, handler):
        d = handler(self)
        if self.match is None:
            d.pop("match", None)
        if self.draws == 1:
            d.pop("draws", None)
        if self.sweep is None:
            d.pop("sweep", None)
        if self.preset is None:  # added later: left out when unset, so stored studies keep their hash
            d.pop("preset", None)
        return d

    @property
    def is_control(self) -> bool:
        return get_method(self.method).name in CONTROL_METHODS

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return f"placebo-{self.match}" if self.match is not None else self.method


class InlineEdit(_Strict):
    """One edit request written out."""

    prompt: str = Field(description="the prompt whose answer changes, e.g. '2+2='")
    target_new: str = Field(description="the new answer, without the separator, e.g. '5'")
    subject: str | None = Field(None, description="the subject inside the prompt that locate-then-edit methods key "
                                                  "on, e.g. '2+2' (default: the prompt)")
    target_true: str | None = Field(None, description="the answer before the edit (ROME's efficacy compares with it)")
    sep: str | None = Field(None, description="separator between prompt and answer (default: a space after a "
                                              "letter or ,.;:!?) before a letter or digit, else none)")


class DatasetEdits(_Strict):
    dataset: str = Field(description="an edit dataset (editscope.probes.datasets.EDIT_DATASETS: counterfact, zsre, "
                                     "mquake, jsonl, knowedit, or a plugin's)")
    source: str | None = Field(None, description="path or hub id; default the copy in ../shared/data")
    limit: int | None = Field(None, ge=1, description="at most this many records (default all)")
    offset: int = Field(0, ge=0, description="skip this many records first")
    case_probes: bool = Field(True, description="also evaluate each record's own probes (paraphrase, neighbours)")
    generate: int | None = Field(None, ge=1, description="evaluate the record's probes by free generation: this "
                                 "many tokens, the answer up to the first clause mark matched exactly "
                                 "(editscope.probes.protocols)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return EDIT_DATASETS.resolve(v)  # UnknownNameError (a ValueError) with the nearest names


class ProbeSpec(_Strict):
    """A probe suite evaluated after every unit (a bare string is its ``suite``)."""

    suite: str = Field(description="a registered probe suite (editscope suites), e.g. arithmetic, facts, counterfact")
    args: dict[str, Any] = Field(default_factory=dict, description="the suite's arguments, e.g. {n: 20} for the "
                                                                   "0..20 arithmetic grid")
    answer_rule: str | None = Field(None, description="read every probe's answer by this rule "
                                    "(editscope.metrics.answers: integer, text, text-exact, or a plugin's); "
                                    "default: each probe's own")

    @field_validator("suite")
    @classmethod
    def _known(cls, v: str) -> str:
        lookup_suite(v)  # UnknownSuiteError with a suggestion
        return v

    @field_validator("answer_rule")
    @classmethod
    def _known_rule(cls, v: str | None) -> str | None:
        if v is None:
            return v

        return ANSWER_RULES[v].name  # UnknownNameError with the nearest rule names


class PerplexitySpec(_Strict):
    """Perplexity of general text after every unit."""

    corpus: str = Field("me_ppl_50", description="a registered corpus (me_ppl_50, me_ppl_1k, wikitext2, ...)")
    limit: int | None = Field(None, ge=1, description="first n documents")


class FluencySpec(_Strict):
    """KnowEdit's fluency: weighted 2/3-gram entropy of text generated from the edit prompts."""

    max_new_tokens: int = Field(100, ge=1, le=1024, description="greedy tokens generated per prompt")
    limit: int = Field(50, ge=1, description="at most this many prompts per unit (the base unit: the first "
                                             "study edits' prompts)")


class DownstreamSpec(_Strict):
    """A downstream task scored after every unit (lm-evaluation-harness's scoring)."""

    task: str = Field(description="a registered task (piqa, lambada, hellaswag, sst2, ...) or an lm-eval task name")
    limit: int | None = Field(100, ge=1, description="first n items (default 100; null: all)")
    num_fewshot: int = Field(0, ge=0, description="demonstrations in front of each item")


class ProtocolSpec(_Strict):
    """How edits meet the model: each alone (single), together (batch) or one after another (sequential)."""

    kind: Literal["single", "batch", "sequential"] = Field("single", description="single: each edit on the base "
                                                           "model, undone after; batch: all (or batch_size) at once; "
                                                           "sequential: accumulated in order")
    batch_size: int | None = Field(None, ge=1, description="batch: edits per batch (default all at once); "
                                                           "sequential: edits applied per step (default 1)")
    score_on: Literal["so_far", "batch"] | None = Field(
        None, description="sequential: 'so_far' (default) scores every edit applied so far at each evaluated step; "
                          "'batch' scores each step's own edits right after it and every edit after the last step "
                          "(the AlphaEdit protocol's two readouts)")
    track_first: int | None = Field(None, ge=1, description="sequential: also score the first n edits at every "
                                                             "evaluated step (their retention over the chain)")
    general_every: int | None = Field(None, ge=1, description="sequential: perplexity, fluency and downstream tasks "
                                                               "every this many steps and after the last (default: at "
                                                               "every evaluated step)")
    eval_when: Literal["each", "every_k", "end"] = Field("each", description="sequential: evaluate after each "
                                                          "edit, every k edits, or at the end only")
    k: int = Field(10, ge=1, description="sequential with eval_when=every_k: evaluate after every k edits")
    guard: Literal["stop", "skip", "off"] = Field("stop", description="collapse guard (sequential): stop the "
                                                  "chain, skip (undo) the edit that collapsed it, or off")
    threshold: float = Field(1000.0, gt=0, description="collapse: perplexity above this (absolute)")
    ratio: float | None = Field(None, gt=1, description="collapse: perplexity above ratio x the base's (instead)")
    guard_corpus: str = Field("me_ppl_50", description="corpus the sequential guard tracks")
    guard_every: int = Field(1, ge=1, description="sequential: check the guard every this many edits")

    @field_validator("guard", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v  # YAML 1.1 reads an unquoted `off` as false

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind != "sequential" and self.eval_when != "each":
            raise ValueError(f"eval_when={self.eval_when!r} applies to kind='sequential' only")
        if self.kind == "single" and self.batch_size is not None:
            raise ValueError("batch_size applies to kind='batch' or 'sequential' only")
        if self.kind != "sequential" and (self.score_on, self.general_every, self.track_first) != (None, None, None):
            raise ValueError("score_on, general_every and track_first apply to kind='sequential' only")
        return self


class CriterionSpec(_Strict):
    """What the study counts as an isolated edit; the report lists which methods meet it (point
    estimate, and with the 95% interval's lower bound) and draws it on the frontier plot. It does
    not change what is computed, so it is not part of the config hash."""

    efficacy: float = Field(1.0, ge=0, le=1, description="target top-1 at least this")
    paraphrase: float = Field(0.5, ge=0, le=1, description="paraphrase top-1 at least this")
    locality: float = Field(0.995, ge=0, le=1, description="share of all non-target probes unchanged at least this")


class ControlsSpec(_Strict):
    """Unrelated-edit controls: each listed method also makes ``unrelated`` edits of other prompts
    of the same kind as each study edit ("7*8=" -> "3" for "2+2=" -> "5"; other CounterFact records
    for a fact) and ``unrelated_other`` of the other kind (a fact for an arithmetic edit and vice
    versa), seeded, each evaluated on the probes built around the study edit and (``own_probes``,
    default on) on its own neighbourhood: the study's per-edit suites built around the unrelated
    edit (arithmetic) or its CounterFact record's probes (facts), as categories ``control-<cat>``,
    so that the edit's damage to its own neighbourhood is compared with what unrelated edits do to
    theirs. Stored as methods ``unrelated-<label>`` and ``unrelated-other-<label>``."""

    unrelated: int = Field(10, ge=0, le=1000, description="same-kind unrelated edits per method and edit (default "
                                                           "10: intervals are drawn over them)")
    unrelated_other: int = Field(0, ge=0, le=1000, description="other-kind unrelated edits per method and edit")
    methods: list[str] | None = Field(None, description="method labels that get them (default: every edit method)")
    source: str | None = Field(None, description="CounterFact path or hub id for fact edits (default ../shared/data)")
    own_probes: bool | None = Field(None, description="also measure each unrelated edit on its own neighbourhood "
                                                      "(default on; its probes that repeat the study grid are scored once per state)")

    @property
    def measures_own(self) -> bool:
        return self.own_probes is not False

    @model_validator(mode="after")
    def _some(self):
        if self.unrelated == 0 and self.unrelated_other == 0:
            raise ValueError("controls: set `unrelated:` and/or `unrelated_other:` to at least 1 (or remove `controls:`)")
        return self


UNRELATED_PREFIX = {"unrelated": "unrelated-", "unrelated_other": "unrelated-other-"}


def _edit_kind(v: Any) -> str:
    """An edits entry with a ``dataset:`` key is a dataset slice, anything else an inline edit, so
    that a bad entry gets the errors of its own kind only."""
    if isinstance(v, dict):
        return "dataset" if "dataset" in v else "inline"
    return "dataset" if isinstance(v, DatasetEdits) else "inline"


_EDIT_TAGS = ("inline", "dataset")
EditEntry = Annotated[Annotated[InlineEdit, Tag("inline")] | Annotated[DatasetEdits, Tag("dataset")],
                      Discriminator(_edit_kind)]


class StudyConfig(_Strict):
    """The study file's top level."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the study's name (tables, archives, write-ups)")
    model: ModelSpec = Field(default_factory=ModelSpec, description="the model, a name or a mapping")
    seed: int = Field(0, description="the study's seed: each unit's seed derives from it, the method "
                                      "and the unit; so do the placebo and unrelated-edit draws")
    methods: list[MethodSpec] = Field(min_length=1, description="the method settings, each a name or a mapping")
    edits: list[EditEntry] = Field(min_length=1, description="inline edit requests and/or dataset slices")
    probes: list[ProbeSpec] = Field(default_factory=list, description="probe suites, each a name or a mapping")
    metrics: list[str] | None = Field(None, description="metrics shown in the report; default all")
    reference: str | None = Field(None, description="method label the report tests the others against")
    perplexity: PerplexitySpec | None = Field(None, description="general-text perplexity after every unit")
    fluency: FluencySpec | None = Field(None, description="KnowEdit fluency of each unit's edit prompts "
                                                          "(scalar fluency:ngram_entropy)")
    downstream: list[DownstreamSpec] = Field(default_factory=list, description="downstream tasks after every unit")
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec, description="single, batch or sequential")
    criterion: CriterionSpec | None = Field(None, description="report-only: the bar an isolated edit must clear")
    equivalence_margin: float = Field(0.02, gt=0, lt=1, description="report-only: the largest difference of rates "
                                      "that counts as no effect in equivalence tests (TOST)")
    controls: ControlsSpec | None = Field(None, description="unrelated-edit controls (placebo and identity are methods)")
    plugins: list[str] = Field(default_factory=list, description="modules imported before validation: they register "
                                                                  "methods, suites, metrics, tasks, corpora or architectures")

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        d = handler(self)
        if self.controls is None:
            d.pop("controls", None)
        for key in ("plugins", "fluency"):  # added later: left out while unset, so stored studies keep their hash
            if not getattr(self, key):
                d.pop(key, None)
        return d

    @field_validator("model", mode="before")
    @classmethod
    def _model_str(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @field_validator("methods", mode="before")
    @classmethod
    def _method_str(cls, v):
        return [{"method": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v

    @field_validator("probes", mode="before")
    @classmethod
    def _probe_str(cls, v):
        return [{"suite": p} if isinstance(p, str) else p for p in v] if isinstance(v, list) else v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        bad = [m for m in v or [] if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; known: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _unique_labels(self):
        names = [m.name for m in self.method_specs()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"methods {dup} appear more than once with the same label; give each a distinct "
                             "`label:` (e.g. {method: ft, label: ft-lr1e-4, hparams: {lr: 1e-4}})")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not one of the method labels {names}")
        edit_labels = [m.name for m in self.method_specs() if not m.is_control]
        for i, m in enumerate(self.methods):
            if m.match is not None and m.match not in edit_labels:
                raise ValueError(f"methods[{i}].match: {m.match!r} is not the label of an edit method in this study "
                                 f"(have {edit_labels}); a placebo matches a method the study runs")
            if m.match is not None:
                matched = next(x for x in self.method_specs() if x.name == m.match)
                kind = type(get_method(matched.method)).kind
                if kind != "weights":
                    raise ValueError(f"methods[{i}].match: {m.match!r} ({matched.method}) is a {kind} intervention, not "
                                     "a weight delta; a placebo matches a weight-delta method (rome, memit, ft-m, ...). "
                                     "For an intervention, the identity control and unrelated edits are the controls")
            cls = type(get_method(m.method))
            if self.protocol.kind == "sequential" and not cls.supports_sequential:
                raise ValueError(f"methods[{i}]: {m.method!r} does not support the sequential protocol (its edits do "
                                 "not stack); run it with protocol kind 'single' or 'batch'")
            if m.draws > 1 and self.protocol.kind == "sequential":
                raise ValueError(f"methods[{i}].draws={m.draws}: a sequential study runs one placebo chain per entry; "
                                 "use several placebo entries with distinct labels and hparams.seed")
        if self.controls is not None:
            c = self.controls
            if self.protocol.kind != "single":
                raise ValueError(f"controls: unrelated-edit controls need protocol kind 'single' (got "
                                 f"{self.protocol.kind!r}); placebo and identity work with every protocol")
            bad = [x for x in c.methods or [] if x not in edit_labels]
            if bad:
                raise ValueError(f"controls.methods: {bad} are not labels of edit methods in this study "
                                 f"(have {edit_labels})")
            clash = sorted({lab for lab, _ in self.control_specs()} & set(names))
            if clash:
                raise ValueError(f"controls: labels {clash} are already used by methods; rename those methods")
        return self

    def control_specs(self) -> list[tuple[str, MethodSpec]]:
        """The unrelated-edit control methods: ``(kind, spec)`` with kind ``unrelated`` or
        ``unrelated_other`` and the spec a copy of the edit method's under label
        ``unrelated-<label>`` / ``unrelated-other-<label>``."""
        if self.controls is None:
            return []
        c = self.controls
        labels = c.methods if c.methods is not None else [m.name for m in self.method_specs() if not m.is_control]
        by = {m.name: m for m in self.method_specs()}
        out = []
        for kind in ("unrelated", "unrelated_other"):
            if getattr(c, kind) == 0:
                continue
            for lab in labels:
                m = by[lab]
                out.append((kind, MethodSpec(method=m.method, label=UNRELATED_PREFIX[kind] + lab, hparams=m.hparams)))
        return out

    def method_specs(self) -> list[MethodSpec]:
        """``methods`` with every sweep expanded into one spec per value, in order."""
        return [x for m in self.methods for x in m.expand()]

    def all_methods(self) -> list[MethodSpec]:
        """Every method the study runs, in order: ``methods`` (sweeps expanded) then the unrelated-edit
        controls."""
        return self.method_specs() + [spec for _, spec in self.control_specs()]

    def sweeps(self) -> dict[str, tuple[str, list[str]]]:
        """Swept method label -> ``(hyperparameter, labels of its points)``."""
        out = {}
        for m in self.methods:
            if m.sweep is not None:
                (key, _), = m.sweep.items()
                out[m.name] = (key, [x.name for x in m.expand()])
        return out

    def control_map(self) -> dict[str, tuple[str, str]]:
        """Control label -> ``(kind, label of the method it controls)``; kinds ``placebo``,
        ``unrelated``, ``unrelated_other``; ``identity`` controls every method (its entry names
        itself)."""
        out: dict[str, tuple[str, str]] = {}
        for m in self.method_specs():
            if m.match is not None:
                out[m.name] = ("placebo", m.match)
            elif m.is_control:
                out[m.name] = ("identity", m.name)
        for kind, spec in self.control_specs():
            out[spec.name] = (kind, spec.name.removeprefix(UNRELATED_PREFIX[kind]))
        return out

    def on_model(self, model: str) -> StudyConfig:
        """The same study on another model: a different study, so it gets its own name (the study's
        name suffixed with the model's) and therefore its own default run folder and config hash. The
        model's dtype, device and remote-code setting carry over; a pinned revision does not (it named a
        commit of the old model). Unchanged when ``model`` is already the study's model."""
        if not model.strip():
            raise ConfigError("--model: empty model name; give a built-in name (editscope models), a .gguf "
                              "path, a folder or a hub id")
        if model == self.model.name:
            return self
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/\\")).name.removesuffix(".gguf")).strip("-.")
        spec = self.model.model_copy(update={"name": model, "revision": None})
        return self.model_copy(update={"model": spec, "name": f"{self.name}-{slug or 'model'}"})

    def config_hash(self) -> str:
        """Content hash of the normalised config (what a run folder is bound to)."""
        data = without_unset_later_keys(self.model_dump(mode="json", exclude=set(REPORT_ONLY)))
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(e: ValidationError, where: str) -> ConfigError:
    lines = []
    for err in e.errors():
        parts = err["loc"]
        # union members and tagged-union tags are pydantic's bookkeeping, not keys of the file
        loc = tuple(p for i, p in enumerate(parts)
                    if not (isinstance(p, str) and ("[" in p or p in {"InlineEdit", "DatasetEdits"}
                                                    or (p in _EDIT_TAGS and i > 0 and isinstance(parts[i - 1], int)))))
        got = err.get("input")
        got_s = "" if isinstance(got, dict) and err["type"] != "extra_forbidden" else f" (got {json.dumps(got, default=str)[:80]})"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        lines.append(f"  {_loc(loc)}: {msg}{got_s}")
    uniq = list(dict.fromkeys(lines))
    return ConfigError(f"{where}: invalid study config\n" + "\n".join(uniq))


def parse_config(data: Any, where: str = "config") -> StudyConfig:
    """Validate a parsed YAML/JSON mapping; :class:`ConfigError` names ``where`` and the key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (name, model, methods, edits, ...), "
                          f"got {type(data).__name__}")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p.strip() for p in plugins):
        raise ConfigError(f"{where}: plugins: give a list of module names to import (e.g. [mylab.methods]), got {plugins!r}")
    try:
        load_plugins(plugins)  # before validation: they may register the methods and suites named below
    except PluginError as e:
        raise ConfigError(f"{where}: plugins: {e}") from None
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        raise _explain(e, where) from None
    except (KeyError, ValueError) as e:  # unknown method/suite raised inside a validator
        raise ConfigError(f"{where}: {e}") from None


def packaged_study(name: str) -> Path | None:
    """An example study shipped with editscope, by bare name (``quickstart``, ``two_plus_two.yaml``)."""
    from importlib import resources

    if not name or "/" in name or "\\" in name:
        return None
    folder = resources.files("editscope") / "examples"
    for cand in (name, f"{name}.yaml"):
        p = folder / cand
        if p.is_file():
            return Path(str(p))
    return None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file (YAML or JSON, UTF-8); a bare name that is not a file here
    names an example study shipped with editscope (``quickstart``)."""
    import yaml

    p = Path(path)
    if not p.exists():
        p = packaged_study(str(path)) or p
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a study file; give the YAML file (e.g. examples/quickstart.yaml)")
    if not p.is_file():
        from importlib import resources

        shipped = sorted(x.name.removesuffix(".yaml") for x in (resources.files("editscope") / "examples").iterdir()
                         if x.name.endswith(".yaml"))
        raise ConfigError(f"{p}: no such study file (nor an example study shipped with editscope: "
                          f"{', '.join(shipped)})")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); save the study file as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{p}: the study file is empty; see examples/quickstart.yaml for the keys")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(data, str(p))


__all__ = ["CONTROL_METHODS", "StrengthSpec", "ConfigError", "ControlsSpec", "DatasetEdits", "DownstreamSpec", "InlineEdit", "MethodSpec", "ModelSpec",
           "PerplexitySpec", "ProbeSpec", "ProtocolSpec", "StudyConfig", "load_config", "parse_config"]
