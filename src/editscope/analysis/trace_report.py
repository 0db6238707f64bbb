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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..stats import mean_interval
from .trace_average import TOKEN_CATEGORIES, AverageEffect, average_indirect_effect
from .tracing import KINDS, TraceError, TraceResult
from .trace_study import read_traces, traced
from .trace_plots import plot_average, plot_trace
from ..report.documents.placeholders import Placeholders, placeholders_in

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


@dataclass
class TraceContext:
    """What a trace placeholder reads: the trace studies by name, and where figures are drawn."""

    sets: Mapping[str, TraceSet]
    figure_dir: Path | None

    def get(self, whole: str, name: str) -> TraceSet:
        if name not in self.sets:
            raise TraceError(f"{{{{{whole}}}}}: no trace study {name!r}; have {sorted(self.sets)}")
        return self.sets[name]


#: the placeholders of trace write-ups (the one template engine of :mod:`editscope.report.documents.placeholders`)
TRACES: Placeholders[TraceContext] = Placeholders("trace write-up", TraceError)


@TRACES.register("traces", "{{traces:SET:n|considered|skipped|p_clean|p_corrupt|meta:KEY}}")
def _traces(ctx: TraceContext, args: str) -> str:
    bits, whole = args.split(":"), f"traces:{args}"
    s = ctx.get(whole, bits[0])
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
    raise TRACES.usage_error("traces", args)


@TRACES.register("aie", "{{aie:SET:KIND:CATEGORY:peak|BLOCK}}")
def _aie(ctx: TraceContext, args: str) -> str:
    bits, whole = args.split(":"), f"aie:{args}"
    if len(bits) != 4:
        raise TRACES.usage_error("aie", args)
    s = ctx.get(whole, bits[0])
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


TRACES.register("aie_table", "{{aie_table:SET}}")(lambda ctx, args: aie_table(ctx.get(f"aie_table:{args}", args.split(":")[0])))


@TRACES.register("figure", "{{figure:SET:average_effect}} or {{figure:SET:trace:CASE}}")
def _trace_figure(ctx: TraceContext, args: str) -> str:
    bits, whole = args.split(":"), f"figure:{args}"
    s = ctx.get(whole, bits[0])
    if ctx.figure_dir is None:
        raise TraceError(f"{{{{{whole}}}}}: figures need a figure folder")
    if bits[1:] == ["average_effect"]:
        kinds = [k for k in KINDS if k in s.results[0].scores]
        paths = plot_average([s.average(k) for k in kinds], len(s.results), ctx.figure_dir, f"{s.name}_average_effect")
    elif len(bits) == 3 and bits[1] == "trace":
        hit = [ln for ln in s.lines if ln["case"] == bits[2] and ln.get("status") == "traced"]
        if not hit:
            raise TraceError(f"{{{{{whole}}}}}: no traced case {bits[2]!r} in {s.name!r}")
        r = traced(hit)[0]
        paths = plot_trace(r, ctx.figure_dir, f"{s.name}_trace_{re.sub(r'[^A-Za-z0-9]+', '-', bits[2])}")
    else:
        raise TRACES.usage_error("figure", args)
    png = next(p for p in paths if p.suffix == ".png")
    return f"![{bits[1]}]({ctx.figure_dir.name}/{png.name})"


def fill_traces(template: str, sets: Mapping[str, TraceSet], figure_dir: Path | None = None) -> str:
    """Replace every placeholder of ``template`` from the trace studies ``sets`` (see the module
    docstring); figures are drawn into ``figure_dir`` (PNG, named ``<set>_<figure>.png``)."""
    return TRACES.fill(template, TraceContext(sets, figure_dir), str)


def referenced_sets(template: str) -> list[str]:
    """The trace study names a template's placeholders read, in order of first use."""
    return list(dict.fromkeys(args.split(":", 1)[0] for kind, args in placeholders_in(template)
                              if kind in ("traces", "aie", "aie_table", "figure")))


def is_trace_template(template: str) -> bool:
    """Whether a write-up template is filled from trace studies (it uses a trace placeholder)."""
    return any(kind in ("traces", "aie", "aie_table") for kind, _ in placeholders_in(template))


def write_trace_document(template: str | Path, out: str | Path, folders: Mapping[str, str | Path]) -> Path:
    """Fill ``template`` from the trace studies ``folders`` (name -> folder) into ``out``; figures go
    to ``<out dir>/figures``."""
    out = Path(out)
    sets = {name: TraceSet(name, folder) for name, folder in folders.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(fill_traces(Path(template).read_text(), sets, out.parent / "figures"))
    return out


__all__ = ["TraceSet", "aie_table", "fill_traces", "is_trace_template", "referenced_sets", "write_trace_document"]
