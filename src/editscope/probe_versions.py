"""One probe version per comparison: each probe's content digest, and the check that every unit of a
study was measured on the same version of every probe.

A probe's digest covers what its measurement depends on: the prompt, separator and target, the
category, the meta (aliases, alternative targets, generation length, provenance), the name of its
answer rule (:mod:`editscope.metrics.answers`) and :data:`SCORER_VERSION`. The store keeps it per
stored row (``probe_digest``); rows written before it existed get it computed from their stored
fields on reading (the same function, the separator resolved as at construction). Two units that
measured a probe with different digests measured different things: every report refuses to compare
them (:class:`ProbeVersionError`), and ``editscope run --resume`` re-evaluates the stale units.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .errors import InputError
from .metrics.answers import rule_name_of
from .requests import Probe, resolve_sep

#: bump when what a stored row measures for a probe changes (scoring, the greedy length cap)
SCORER_VERSION = 1


def meta_text(meta: Mapping[str, Any] | None) -> str:
    """A probe meta as the store writes it (sorted keys, non-JSON values as text)."""
    return json.dumps(dict(meta or {}), sort_keys=True, default=str)


def content_digest(prompt: str, sep: str, target: str, category: str, meta: Mapping[str, Any] | str | None) -> str:
    """The digest of one probe's content (16 hex characters); ``meta`` as a dict or as its stored text."""
    text = meta if isinstance(meta, str) else meta_text(meta)
    rule = rule_name_of(target, json.loads(text))
    blob = json.dumps([SCORER_VERSION, prompt, sep, target, category, text, rule])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def probe_digest(probe: Probe) -> str:
    """:func:`content_digest` of a :class:`Probe`."""
    return content_digest(probe.prompt, probe.sep, probe.target, probe.category, probe.meta)


def row_digest(prompt: str, target: str, category: str, meta: Mapping[str, Any] | str | None) -> str:
    """The digest of a stored row that has none (written before digests were stored): its separator
    is the one :func:`editscope.requests.resolve_sep` gives, as every probe without an explicit one had."""
    return content_digest(prompt, resolve_sep(prompt, target), target, category, meta)


class ProbeVersionError(InputError, ValueError):
    """Units of one study measured on different versions of the same probes."""


@dataclass(frozen=True)
class VersionSplit:
    """One probe set whose probes differ between units: ``groups`` are the units (``method/unit``)
    that share one version of the differing probes, largest group first."""

    probe_set: str
    n_probes: int
    groups: list[list[str]]

    def describe(self) -> str:
        parts = []
        for g in self.groups:
            names = ", ".join(g[:6]) + (f", ... ({len(g)} units)" if len(g) > 6 else "")
            parts.append(f"[{names}]")
        return f"probe set {self.probe_set!r}: {self.n_probes} probes differ between " + " and ".join(parts)


def version_splits(df: pd.DataFrame) -> list[VersionSplit]:
    """The probe sets of a frame of rows (columns ``method, unit, probe_set, index, probe_digest``)
    whose probes were measured in more than one version."""
    if df.empty:
        return []
    keyed = df[["probe_set", "index", "probe_digest"]]
    n_versions = keyed.groupby(["probe_set", "index"], sort=False)["probe_digest"].nunique()
    bad = n_versions[n_versions > 1]
    if bad.empty:
        return []
    out = []
    bad_keys = set(bad.index)
    for pset in dict.fromkeys(k[0] for k in bad.index):
        rows = df[(df["probe_set"] == pset)]
        rows = rows[[(pset, i) in bad_keys for i in rows["index"].tolist()]]
        who = rows["method"].astype(str) + "/" + rows["unit"].astype(str)
        signature = (rows.assign(who=who).sort_values("index").groupby("who", sort=False)["probe_digest"]
                     .agg(lambda s: hash(tuple(s))))
        groups: dict[int, list[str]] = {}
        for unit, sig in signature.items():
            groups.setdefault(sig, []).append(unit)
        n = int(sum(1 for k in bad.index if k[0] == pset))
        out.append(VersionSplit(pset, n, sorted(groups.values(), key=len, reverse=True)))
    return out


def require_one_version(df: pd.DataFrame, where: str) -> None:
    """Raise :class:`ProbeVersionError` when the rows hold a probe in more than one version."""
    splits = version_splits(df)
    if not splits:
        return
    detail = "; ".join(s.describe() for s in splits[:3]) + (f"; and {len(splits) - 3} more probe sets"
                                                           if len(splits) > 3 else "")
    raise ProbeVersionError(
        f"{where}: units were measured on different versions of the same probes, so they cannot be compared "
        f"({detail}). Re-evaluate the stale units on the current suites with `editscope run CONFIG --out RUN "
        "--resume` (the study's config file and run folder)")


__all__ = ["ProbeVersionError", "SCORER_VERSION", "VersionSplit", "content_digest", "meta_text", "probe_digest",
           "require_one_version", "row_digest", "version_splits"]
