"""Reference hyperparameter presets: the settings other codebases run a method with, so that the
same records give numbers comparable with their tables.

A preset maps method names to hyperparameters; a study's ``{method: rome, preset: easyedit}`` (or
``apply_edit(..., preset="easyedit")``, ``editscope edit --preset easyedit``) takes them under the
hyperparameters given explicitly (``hparams`` wins) and over the per-architecture defaults.

``easyedit``: EasyEdit (zjunlp/EasyEdit, commit 14cea82), the Llama files ``hparams/ROME/llama-7b.yaml``,
``hparams/MEMIT/llama-7b.yaml`` and ``hparams/FT/llama-7b.yaml`` (``objective_optimization:
prompt_last`` is its FT-L, ``target_new`` its FT-M):

| method | setting | editscope default | easyedit preset |
|---|---|---|---|
| rome | key covariance (``mom2_adjustment``) | u = C^-1 k | off: u = k |
| rome | where the new value is inserted exactly (``insert_at``) | the key averaged over contexts (the paper's k*) | the bare prompt's key (their code: ``(v* - W k) / (u . k)`` at the prompt) |
| rome, memit | context prefixes | 10 x 10 new tokens | rome: 10 x 3 and 10 x 8 new tokens (``[[5,10],[10,10]]`` counts BOS and the seed word); memit: 5 x 8 (``[(10,5)]``) |
| rome, memit | a target loss still above ``v_fail_loss`` ends in EditFailed | 3.0 nats/token | never (EasyEdit applies whatever the optimisation reached) |
| memit | layers, ``mom2_update_weight`` | the five blocks ending at ROME's, 15000 x d_ff / 16384 | [4..8], 15000 |
| ft-l | L-inf box on the weight change | 5e-3 | none (``norm_constraint: false``) |

Shared by both (no preset needed): 25 optimisation steps, lr 0.5, weight decay 1e-3, KL factor
0.0625, clamp factor 4, stop at loss 0.05 (ROME/MEMIT); Adam at lr 5e-4 for 25 steps, stop at loss
0.01 (FT-L/FT-M). Left per architecture: EasyEdit's FT files choose the layer per model (21 of 32
on Llama-2-7B) and have none for this one, so the preset keeps editscope's; ROME's block 5 is
both's. Not reproduced: EasyEdit's covariance comes from 100,000 Wikipedia samples, editscope's from
its offline corpus (``stats_corpus``), which the easyedit ROME preset does not read anyway.

``rome-paper``: the ROME paper's code (kmeng01/rome, ``hparams/ROME/gpt2-xl.json``,
``EleutherAI_gpt-j-6B.json``): covariance on, insertion at the prompt's key, 20 steps, weight decay 0.5, 10 x 4 and 10 x 9 new
tokens of context (its ``[[5,10],[10,10]]`` counts the one-token ``<|endoftext|>`` seed; editscope
seeds with its five words).

``fast``: editscope's own speed setting for ROME, MEMIT and AlphaEdit: the residual optimisation's
Adam step at lr 1.0 instead of 0.5 (about 11 instead of 16 steps per edit on the default model).
Quality-checked on 100 CounterFact records against the defaults (``benchmarks/bench_rome_speed.py
--n 100 --lever v_lr=1.0``): ES 0.97 vs 0.97, PS 0.94 vs 0.92, NS 0.58 vs 0.59, no McNemar
difference; median single ROME edit 3.14 s vs 4.19 s. The defaults keep lr 0.5, the published
setting, so that results stay comparable with the field's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..registry import Registry, normalise
from .base import HparamError, get_method


@dataclass(frozen=True)
class Preset:
    """Hyperparameters per method (registered method names) and where they come from."""

    name: str
    source: str
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_NEVER_FAIL = 1e6  # nats/token: a v_fail_loss no optimisation stays above

PRESETS: Registry[Preset] = Registry("hyperparameter preset", {p.name: p for p in [
    Preset("easyedit", "EasyEdit 14cea82, hparams/{ROME,MEMIT,FT}/llama-7b.yaml", {
        "rome": {"mom2_adjustment": False, "insert_at": "prompt_key", "contexts": [(3, 10), (8, 10)],
                 "v_fail_loss": _NEVER_FAIL},
        "memit": {"layers": [4, 5, 6, 7, 8], "mom2_weight": 15000.0, "contexts": [(8, 5)],
                  "v_fail_loss": _NEVER_FAIL},
        "ft-l": {"linf": None},
        "ft-m": {},
    }),
    Preset("fast", "editscope: benchmarks/bench_rome_speed.py (same ES/PS/NS on 100 CounterFact records)", {
        m: {"v_lr": 1.0} for m in ("rome", "memit", "alphaedit")
    }),
    Preset("rome-paper", "kmeng01/rome, hparams/ROME/gpt2-xl.json and EleutherAI_gpt-j-6B.json", {
        "rome": {"mom2_adjustment": True, "insert_at": "prompt_key", "v_steps": 20, "v_weight_decay": 0.5,
                 "contexts": [(4, 10), (9, 10)]},
    }),
]})


def preset_hparams(method: str, preset: str) -> dict[str, Any]:
    """The hyperparameters ``preset`` sets for ``method`` (a copy); a clear error for an unknown
    preset or one that has no settings for this method."""
    p = PRESETS[preset]
    name = get_method(method).name
    for m, values in p.methods.items():
        if normalise(m) == normalise(name):
            return {k: (list(v) if isinstance(v, list) else v) for k, v in values.items()}
    raise HparamError(f"preset {p.name!r} has no settings for method {name!r}; it covers "
                      f"{', '.join(p.methods)} (source: {p.source})")


def with_preset(method: str, preset: str | None, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` over ``preset``'s settings for ``method`` (``hparams`` wins)."""
    return {**(preset_hparams(method, preset) if preset else {}), **hparams}


__all__ = ["PRESETS", "Preset", "preset_hparams", "with_preset"]
