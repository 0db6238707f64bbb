"""Figures of causal traces: one prompt's three indirect-effect heatmaps (residual stream, MLP,
attention) and the average indirect effect over many prompts (per token category and block, and
per block at the last subject token with 95% intervals). PNG and PDF, no timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..report.formats.plots import save_figure, plt  # plots selects the non-interactive backend
from .trace_average import AverageEffect
from .tracing import KIND_LABEL, TraceResult

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}


def plot_trace(r: TraceResult, out: Path, stem: str = "trace") -> list[Path]:
    """``stem.png``/``.pdf``: P(target) after restoring each state, one heatmap per kind (tokens
    down, blocks across; subject tokens marked with ``*``), P(corrupted) as the colour scale's floor."""
    kinds = list(r.scores)
    labels = [f"{t!r}*" if r.subject_range[0] <= i < r.subject_range[1] else repr(t) for i, t in enumerate(r.tokens)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 0.32 * len(r.tokens) + 1.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        g = r.grid(kind)
        im = ax.imshow(g, cmap=CMAPS.get(kind, "Blues"), vmin=min(r.p_corrupt, float(g.min())), aspect="auto",
                       interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("block" + ("" if kind == "hidden" else f" (centre of {r.window})"), fontsize=8)
        ax.set_title(f"{KIND_LABEL[kind]}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        cb = fig.colorbar(im, ax=ax, fraction=0.05)
        cb.ax.tick_params(labelsize=6)
        cb.set_label(f"P({r.target!r})", fontsize=7)
    fig.suptitle(f"{r.prompt!r} -> {r.target!r}: P clean {r.p_clean:.3f}, corrupted {r.p_corrupt:.3f} "
                 f"({r.samples} samples, noise {r.noise:g} sd)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out, stem)


def plot_average(effects: Sequence[AverageEffect], n_prompts: int, out: Path, stem: str = "average_effect") -> list[Path]:
    """The average indirect effect: a heatmap per kind (token category x block; categories no prompt
    has, e.g. tokens between subject and end in "a+b=", left out) above a line plot per kind at the
    last subject token and at the last token, each with its 95% interval band."""
    fig, axes = plt.subplots(2, len(effects), figsize=(4.6 * len(effects), 5.6), squeeze=False)
    for i, e in enumerate(effects):
        ax = axes[0][i]
        rows = [j for j, n in enumerate(e.n) if n > 0]
        im = ax.imshow(e.mean[rows], cmap=CMAPS.get(e.kind, "Blues"), aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(rows)), [f"{e.categories[j]} ({e.n[j]})" for j in rows], fontsize=6)
        ax.set_title(f"average indirect effect: {KIND_LABEL[e.kind]}", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.05).ax.tick_params(labelsize=6)
        ax = axes[1][i]
        x = np.arange(e.mean.shape[1])
        for category, colour in (("last subject token", "#1d3557"), ("last token", "#e76f51")):
            row = e.categories.index(category)
            ax.plot(x, e.mean[row], color=colour, lw=1, label=category)
            ax.fill_between(x, e.low[row], e.high[row], color=colour, alpha=0.2, lw=0)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("block", fontsize=7)
        ax.set_ylabel("average indirect effect", fontsize=7)
        ax.legend(fontsize=6, frameon=False)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"Average indirect effect over {n_prompts} prompts (95% intervals over prompts)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out, stem)


__all__ = ["plot_average", "plot_trace"]
