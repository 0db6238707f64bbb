"""Write-ups of trace studies with no hand-typed number: a Markdown template whose placeholders are
filled from stored trace studies (folders written by ``editscope trace --dataset/--arithmetic``).

Placeholders (``SET`` is a trace study's name, given with its folder):

* ``{{traces:SET:n}}`` traced cases, ``{{traces:SET:considered}}`` cases looked at (traced or
  skipped), ``{{traces:SET:skipped}}``;
* ``{{traces:SET:p_clean}}``, ``{{traces:SET:p_corrupt}}``: the answer's probability on the clean
  and on the corrupted prompt, mean over the traced cases with a 95% t interval (the indirect
  effect of a state can be at most about their difference);
* ``{{traces:SET:meta:KEY}}`` the study's metadata (``model``, ``noise_std``, ``description``, or a
  setting: ``samples``, ``noise``, ``window``, ``seed``);
* ``{{aie:SET:KIND:CATEGORY:peak}}`` the block where the average indirect effect of ``KIND``
  (hidden, mlp, attn) at a token category (``last subject token``, ``last token``, ...) peaks, with
  its value and 95% interval; ``{{aie:SET:KIND:CATEGORY:BLOCK}}`` the value at a block;
* ``{{aie_table:SET}}`` per kind and token category: the peak block and value, and the mean effect
  over the first, middle and last third of the blocks;
* ``{{figure:SET:average_effect}}`` the summary figure; ``{{figure:SET:trace:CASE}}`` one case's
  heatmaps (PNG copied next to the document).

An unknown set, kind, category or case is an error that names it and what there is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..stats import mean_interval
from .trace_average import TOKEN_CATEGORIES, AverageEffect, average_indirect_effect
from .tracing import KINDS, TraceError, TraceResult
from .trace_study import read_traces, traced
from .trace_plots import plot_average, plot_trace

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+):([^}]*)\}\}")


class TraceSet:
    """One stored trace study: its metadata, stored lines and traces, averages computed once."""

    def __init__(self, name: str, folder: str | Path):
        self.name, self.folder = name, Path(folder)
        self.meta, self.lines = read_traces(folder)
        self.results: list[TraceResult] = traced(self.lines)
        self._avg: dict[str, AverageEffect] = {}

    def average(self, kind: str) -> AverageEffect:
        if kind not in self._avg:
            if not self.results:
                raise TraceError(f"trace study {self.name!r} holds no trace")
            if kind not in self.results[0].scores:
                raise TraceError(f"trace study {self.name!r} has no {kind!r} traces; it has {sorted(self.results[0].scores)}")
            self._avg[kind] = average_indirect_effect(self.results, kind)
        return self._avg[kind]


def _cell(e: AverageEffect, row: int, block: int) -> str:
    return f"{e.mean[row, block]:+.4f} [{e.low[row, block]:+.4f}, {e.high[row, block]:+.4f}]"


def _category(args: str, cat: str) -> int:
    if cat not in TOKEN_CATEGORIES:
        raise TraceError(f"{{{{{args}}}}}: unknown token category {cat!r}; use one of {', '.join(TOKEN_CATEGORIES)}")
    return TOKEN_CATEGORIES.index(cat)


def aie_table(s: TraceSet) -> str:
    """Markdown: per kind and token category, the peak block and value, and the mean over thirds."""
    n_layers = len(s.results[0].scores[next(iter(s.results[0].scores))][0])
    thirds = [t for t in np.array_split(np.arange(n_layers), 3) if len(t)]
    head = ["kind", "token", "prompts", "peak block", "peak AIE [95%]",
            *(f"mean AIE blocks {t[0]}-{t[-1]}" for t in thirds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind in (k for k in KINDS if k in s.results[0].scores):
        e = s.average(kind)
        for i, cat in enumerate(e.categories):
            if e.n[i] == 0:
                continue
            peak = int(np.nanargmax(e.mean[i]))
            lines.append("| " + " | ".join([kind, cat, str(e.n[i]), str(peak), _cell(e, i, peak),
                                            *(f"{np.nanmean(e.mean[i, t]):+.4f}" for t in thirds)]) + " |")
    return "\n".join(lines)


def fill_traces(template: str, sets: Mapping[str, TraceSet], figure_dir: Path | None = None) -> str:
    """Replace every placeholder of ``template`` from the trace studies ``sets`` (see the module
    docstring); figures are drawn into ``figure_dir`` (PNG, named ``<set>_<figure>.png``)."""
    def get(args: str, name: str) -> TraceSet:
        if name not in sets:
            raise TraceError(f"{{{{{args}}}}}: no trace study {name!r}; have {sorted(sets)}")
        return sets[name]

    def one(m: re.Match) -> str:
        kind, args = m.group(1), m.group(2)
        bits = args.split(":")
        whole = f"{kind}:{args}"
        if kind == "traces":
            s = get(whole, bits[0])
            if bits[1:] == ["n"]:
                return str(len(s.results))
            if bits[1:] == ["considered"]:
                return str(len(s.lines))
            if bits[1:] == ["skipped"]:
                return str(sum(ln.get("status") == "skipped" for ln in s.lines))
            if bits[1:] in (["p_clean"], ["p_corrupt"]):
                if not s.results:
                    raise TraceError(f"{{{{{whole}}}}}: trace study {s.name!r} holds no trace")
                iv = mean_interval([getattr(r, bits[1]) for r in s.results])
                return f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"
            if len(bits) == 3 and bits[1] == "meta":
                v = s.meta.get(bits[2], s.meta.get("settings", {}).get(bits[2]))
                if v is None:
                    raise TraceError(f"{{{{{whole}}}}}: no metadata {bits[2]!r}")
                return f"{v:.4g}" if isinstance(v, float) else str(v)
            raise TraceError(f"{{{{{whole}}}}}: write {{{{traces:SET:n|considered|skipped|p_clean|p_corrupt|meta:KEY}}}}")
        if kind == "aie":
            if len(bits) != 4:
                raise TraceError(f"{{{{{whole}}}}}: write {{{{aie:SET:KIND:CATEGORY:peak|BLOCK}}}}")
            s = get(whole, bits[0])
            e = s.average(bits[1])
            row = _category(whole, bits[2])
            if e.n[row] == 0:
                raise TraceError(f"{{{{{whole}}}}}: no traced prompt has a {bits[2]!r}")
            if bits[3] == "peak":
                peak = int(np.nanargmax(e.mean[row]))
                return f"block {peak}: {_cell(e, row, peak)}"
            if not bits[3].isdigit() or int(bits[3]) >= e.mean.shape[1]:
                raise TraceError(f"{{{{{whole}}}}}: block {bits[3]!r} is not one of 0..{e.mean.shape[1] - 1}")
            return _cell(e, row, int(bits[3]))
        if kind == "aie_table":
            return aie_table(get(whole, bits[0]))
        if kind == "figure":
            s = get(whole, bits[0])
            if figure_dir is None:
                raise TraceError(f"{{{{{whole}}}}}: figures need a figure folder")
            if bits[1:] == ["average_effect"]:
                kinds = [k for k in KINDS if k in s.results[0].scores]
                paths = plot_average([s.average(k) for k in kinds], len(s.results), figure_dir, f"{s.name}_average_effect")
            elif len(bits) == 3 and bits[1] == "trace":
                hit = [ln for ln in s.lines if ln["case"] == bits[2] and ln.get("status") == "traced"]
                if not hit:
                    raise TraceError(f"{{{{{whole}}}}}: no traced case {bits[2]!r} in {s.name!r}")
                r = traced(hit)[0]
                paths = plot_trace(r, figure_dir, f"{s.name}_trace_{re.sub(r'[^A-Za-z0-9]+', '-', bits[2])}")
            else:
                raise TraceError(f"{{{{{whole}}}}}: write {{{{figure:SET:average_effect}}}} or {{{{figure:SET:trace:CASE}}}}")
            png = next(p for p in paths if p.suffix == ".png")
            return f"![{bits[1]}]({figure_dir.name}/{png.name})"
        raise TraceError(f"unknown placeholder {{{{{whole}}}}}")

    return _PLACEHOLDER.sub(one, template)


def referenced_sets(template: str) -> list[str]:
    """The trace study names a template's placeholders read, in order of first use."""
    return list(dict.fromkeys(m.group(2).split(":", 1)[0] for m in _PLACEHOLDER.finditer(template)
                              if m.group(1) in ("traces", "aie", "aie_table", "figure")))


def is_trace_template(template: str) -> bool:
    """Whether a write-up template is filled from trace studies (it uses a trace placeholder)."""
    return any(m.group(1) in ("traces", "aie", "aie_table") for m in _PLACEHOLDER.finditer(template))


def write_trace_document(template: str | Path, out: str | Path, folders: Mapping[str, str | Path]) -> Path:
    """Fill ``template`` from the trace studies ``folders`` (name -> folder) into ``out``; figures go
    to ``<out dir>/figures``."""
    out = Path(out)
    sets = {name: TraceSet(name, folder) for name, folder in folders.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(fill_traces(Path(template).read_text(), sets, out.parent / "figures"))
    return out


__all__ = ["TraceSet", "aie_table", "fill_traces", "is_trace_template", "referenced_sets", "write_trace_document"]
