"""Derived models: a base model trained by a registered recipe, built once and cached by the recipe's
digest (docs/architecture.md "Derived models").

A :class:`Recipe` names a base model, a training set (:class:`ArithmeticData`: "a op b=" sums split
into training and held-out pairs, disjoint by construction and checked), the training settings and a
seed. :func:`derive` builds it: fine-tuning of every weight (``method: full``) or of PEFT LoRA
adapters merged afterwards (``method: lora``) on the answer tokens (prompt masked, the shared
:func:`editscope.methods.training.continuation_nll`), AdamW, optionally under bf16 autocast,
mini-batches in a seeded order that depends only on the step, so a build interrupted at any point
resumes from its last checkpoint to the same weights. A LoRA recipe's adapter (bf16) can ship with
editscope (:data:`SHIPPED`, :func:`ship`): ``derive`` then merges it into the base instead of training,
in float64 rounded once to fp32, so the merged weights are the same bits on every machine. Checkpoints and the result are safetensors (never pickle): the weights, Adam's moments and a
JSON state. The finished model is written to a temporary folder and moved into place, with a
``manifest.json``: the recipe and its digest, the training data's digest, the losses, the held-out
greedy exact-match accuracy per operation, the build time and the weights' SHA-256. A cache entry
whose weights do not match its manifest is rebuilt (and said so).

``load_model(NAME)`` and ``--model NAME`` build a registered recipe on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..checkpoints import batch_at, clear_checkpoint, has_checkpoint, load_checkpoint, save_checkpoint, weights_sha
from ..data.corpora import load_corpus
from ..errors import InputError, WorkError
from ..methods.training import continuation_nll, trainable, training_batch
from ..metrics.answers import integer_reaches
from ..paths import cache_root
from ..probes.arithmetic import FEW_SHOT, TEMPLATE_NAMES, parse_arithmetic, query_in
from ..registry import Registry
from ..scoring import encode_pairs, greedy_continuations

from .model import Model, ModelSource, load_model, register_model_source
from .state import fingerprint_of, tensor_digests
from .tiny import tiny_model

MANIFEST = "manifest.json"
ADAPTER = "adapter.safetensors"
WEIGHTS = "model.safetensors"
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class RecipeError(InputError, ValueError):
    """A recipe that cannot be built as written (overlapping splits, an unknown operation)."""


class DerivedModelError(WorkError):
    """A build that failed (the cache is left without a half-written model)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArithmeticData(_Strict):
    """Sums ``a op b=`` -> ``c`` over operand ranges per operation, split into training and held-out
    pairs by a seeded shuffle. ``train_extra``: pairs ("a op b") always trained on; one that falls in
    the held-out split is refused (the held-out accuracy would be inflated)."""

    ranges: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {"+": (0, 99), "-": (0, 99), "*": (0, 12)},
        description="operation -> inclusive operand range")
    held_out: float = Field(0.2, gt=0, lt=1, description="share of each operation's pairs held out")
    split_seed: int = 0
    train_extra: tuple[str, ...] = ()
    end: str = Field("\n", description="text trained after every answer, so that the model stops: without it a "
                                       "build answered '70+61=' with '131111' (right sum, digits run on, no "
                                       "integer match)")
    templates: tuple[str, ...] = Field(
        (), description="arithmetic-suite wordings (probes.arithmetic.query_in) a training pair is also shown in: "
                        "each pair once in the grid form and once in a seeded one of these")
    focus: tuple[int, int] | None = Field(
        None, description="operand range whose training pairs (both operands in it) are shown focus_repeat times: "
                          "uniform pairs over 0..99 hold few small sums (12x12 of 100x100), and a first build "
                          "trained that way answered only 75% of the 0..10 grid's sums right (+), 58% (- and *)")
    focus_repeat: int = Field(1, ge=1, le=100, description="how often each focus pair is shown (each time in the grid "
                                                           "form and in a seeded wording)")

    @model_validator(mode="after")
    def _check(self):
        for op, (lo, hi) in self.ranges.items():
            if op not in _OPS:
                raise ValueError(f"ranges: operation {op!r} is not one of {', '.join(_OPS)}")
            if lo < 0 or hi < lo:
                raise ValueError(f"ranges[{op!r}] = ({lo}, {hi}): give 0 <= low <= high")
        for t in self.templates:
            try:
                query_in(t, 1, "+", 1)
            except ValueError as e:
                raise ValueError(f"templates: {e}") from None
        return self

    def examples(self, pairs: list[tuple[int, str, int]]) -> list[tuple[str, str]]:
        """The training texts of ``pairs`` as (prompt, continuation): each pair in the grid form,
        and in one of :attr:`templates` (seeded per pair) when any are given; every answer followed
        by :attr:`end`."""
        shown = list(pairs)
        if self.focus is not None and self.focus_repeat > 1:
            lo, hi = self.focus
            shown += [c for c in pairs if lo <= c[0] <= hi and lo <= c[2] <= hi] * (self.focus_repeat - 1)
        out = [(prompt_of(*c), answer_of(*c) + self.end) for c in shown]
        if self.templates:
            rng = random.Random(f"templates/{self.split_seed}")
            for c in shown:
                prompt, sep = query_in(rng.choice(self.templates), *c)
                out.append((prompt, sep + answer_of(*c) + self.end))
        return out

    def split(self) -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
        """(training, held-out) pairs ``(a, op, b)``; every operation contributes to both."""
        rng = random.Random(f"arith/{self.split_seed}")
        train, held = [], []
        for op, (lo, hi) in self.ranges.items():
            cells = [(a, op, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
            rng.shuffle(cells)
            k = max(1, round(len(cells) * self.held_out))
            if k >= len(cells):
                raise RecipeError(f"ranges[{op!r}]: {len(cells)} pairs leave none to train on after holding out {k}")
            held += cells[:k]
            train += cells[k:]
        extra = [_parse_pair(s) for s in self.train_extra]
        overlap = sorted(set(extra) & set(held))
        if overlap:
            shown = ", ".join(f"{a}{op}{b}" for a, op, b in overlap[:5])
            raise RecipeError(f"train_extra: {len(overlap)} pair(s) are in the held-out split ({shown}); held-out "
                              "pairs must never be trained on -- remove them or change split_seed")
        train += [p for p in extra if p not in set(train)]
        return train, held


def _parse_pair(s: str) -> tuple[int, str, int]:
    parsed = parse_arithmetic(s if s.rstrip().endswith("=") else s + "=")
    if parsed is None:
        raise RecipeError(f"train_extra: {s!r} is not 'a op b' with non-negative integers")
    return parsed


def prompt_of(a: int, op: str, b: int) -> str:
    return f"{a}{op}{b}="


def answer_of(a: int, op: str, b: int) -> str:
    return str(_OPS[op](a, b))


class Preserve(_Strict):
    """Keep what the base model does on general text while training: each step adds
    ``weight * KL(base || model)`` of the next-token distributions over ``sequences`` windows of
    ``tokens`` tokens of ``corpus`` (a :func:`editscope.metrics.load_corpus` name or file; windows in
    a seeded order that depends only on the step). The base is a frozen copy of the recipe's base."""

    corpus: str = "wikitext2"
    weight: float = Field(1.0, gt=0)
    sequences: int = Field(8, ge=1, description="text windows per step")
    tokens: int = Field(64, ge=8, description="tokens per window")


class LoraSpec(_Strict):
    """PEFT LoRA adapters on every linear projection of the blocks (attention and MLP; not the
    embeddings or the head), ``W += B A * alpha / rank`` once merged."""

    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0)


class Recipe(_Strict):
    """How to build a derived model (see the module docstring)."""

    name: str
    base: str = Field(description="the base model: a built-in name, a local folder, a hub id, or tiny:<type>")
    data: ArithmeticData = Field(default_factory=ArithmeticData)
    method: Literal["full", "lora"] = Field("full", description="full fine-tuning, or LoRA adapters merged "
                                                               "into the weights (see lora)")
    lora: LoraSpec | None = Field(None, description="the adapters of method 'lora' (default LoraSpec())")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: the training forward and backward "
                                                                  "under CPU bf16 autocast (trained tensors stay fp32)")
    lr: float = Field(2e-5, gt=0)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1, description="steps between resumable checkpoints")
    eval_limit: int | None = Field(None, ge=1, description="held-out pairs evaluated per operation (default all)")
    preserve: Preserve | None = Field(None, description="KL to the base model on general text while training")
    description: str = ""

    @model_validator(mode="after")
    def _check_method(self):
        if self.method == "lora" and self.lora is None:
            object.__setattr__(self, "lora", LoraSpec())
        if self.method == "full" and self.lora is not None:
            raise ValueError("lora: settings for LoRA adapters were given but method is 'full'; set method: lora "
                             "or drop lora")
        return self

    def digest(self) -> str:
        """Content hash of everything that determines the weights (not the name or description).
        Fields added later leave the digests of recipes that keep their defaults unchanged."""
        body = self.model_dump(mode="json", exclude={"name", "description", "checkpoint_every", "eval_limit"})
        for key, default in (("lora", None), ("precision", "fp32")):
            if body.get(key) == default:
                body.pop(key)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


RECIPES: Registry[Recipe] = Registry("model recipe")


def register_recipe(recipe: Recipe, *, overwrite: bool = False) -> Recipe:
    """Make ``recipe`` buildable by name (``editscope derive NAME``, ``load_model(NAME)``)."""
    return RECIPES.register(recipe.name, recipe, overwrite=overwrite)


#: the arithmetic recipes' data and schedule: each training pair in the grid form and in one of the
#: arithmetic suite's wordings (so that its paraphrases are answered too), the pairs with both operands
#: in 0..12 (the flagship's grid) shown 8 times, 1600 steps of 32 (about 1.35 passes), constant lr,
#: and the KL to the base on 4 WikiText-2 windows of 64 tokens per step. Measured on the second build
#: (1000 steps, no focus, no general-text term): held-out exact match +0.905 -0.823 *0.588, but only
#: 91/121, 70/121, 70/121 of the 0..10 grid ("8*1=" -> "96"), and ME-PPL_50 94.07 -> 173.75, LAMBADA
#: 0.340 -> 0.245 (200 examples; PIQA 0.640 both): without the general-text term the model forgets
#: how to write. benchmarks/bench_derive.py measures a build against its goals.
_SUMS = dict(data=ArithmeticData(templates=tuple(t for t in TEMPLATE_NAMES if t != FEW_SHOT), focus=(0, 12),
                                  focus_repeat=8),
             preserve=Preserve(sequences=4, tokens=64), steps=1600, batch_size=32, checkpoint_every=100,
             eval_limit=400)

#: Build 3 (every weight, fp32, lr 1e-4; 9,771 s here): held-out +0.915 -0.723 *0.824, 119/108/113
#: of 121 on the 0..10 grid, "2+2=" and its 11 wordings -> 4, ME-PPL_50 89.78, LAMBADA 0.330, PIQA
#: 0.640. Kept under its own name: nothing of it ships, so a new machine trains it for hours.
register_recipe(Recipe(
    name="smollm2-135m-arith-full", base="smollm2-135m", lr=1e-4, **_SUMS,
    description="build 3 of smollm2-135m-arith: every weight fine-tuned (fp32, lr 1e-4); about 2.7 h here"))

#: Build 4, the arithmetic model now: LoRA adapters (rank 16 on every projection, lr 1e-3, bf16
#: autocast) instead of every weight. The adapter (10 MB in bf16) ships with editscope
#: (models/shipped), so a new machine merges it in seconds instead of training for hours, and a step
#: takes 3.9 s here against 6.2 s for fp32 full fine-tuning (LoRA alone in fp32: 5.0 s).
_ARITH = dict(_SUMS, method="lora", lora=LoraSpec(rank=16, alpha=32.0), precision="bf16", lr=1e-3)

register_recipe(Recipe(
    name="smollm2-135m-arith", base="smollm2-135m",
    description="SmolLM2-135M-Instruct fine-tuned on 'a op b=' (+ and - over 0..99, * over 0..12; 20% of the pairs "
                "held out) so that it knows the sums the flagship edits", **_ARITH))
register_recipe(Recipe(
    name="gemma3-270m-arith", base="gemma3-270m",
    description="Gemma 3 270M fine-tuned by the same recipe as smollm2-135m-arith (the cross-model study's second "
                "arithmetic-competent model)", **_ARITH))


def _recipe(name_or_recipe: str | Recipe) -> Recipe:
    return name_or_recipe if isinstance(name_or_recipe, Recipe) else RECIPES[name_or_recipe]


def folder_of(recipe: Recipe) -> Path:
    """The recipe's cache folder: ``<cache>/derived/<name>-<digest>``."""
    return cache_root() / "derived" / f"{recipe.name}-{recipe.digest()}"


def _load_base(recipe: Recipe) -> Model:
    if recipe.base.startswith("tiny:"):
        return tiny_model(recipe.base.split(":", 1)[1], seed=recipe.seed)
    return load_model(recipe.base)


def data_digest(pairs: list[tuple[int, str, int]]) -> str:
    blob = json.dumps([f"{a}{op}{b}={answer_of(a, op, b)}" for a, op, b in pairs]).encode()
    return hashlib.sha256(blob).hexdigest()


def held_out_accuracy(model: Model, held: list[tuple[int, str, int]], limit: int | None = None,
                      seed: int = 0, template: str = "grid") -> dict[str, dict[str, float]]:
    """Greedy exact match of the answer (the first integer generated, ``integer`` answer rule) on the
    held-out pairs worded by ``template`` (``probes.arithmetic.query_in``), per operation (a seeded
    sample of ``limit`` per operation when given)."""
    out: dict[str, dict[str, float]] = {}
    for op in dict.fromkeys(op for _, op, _ in held):
        cells = [c for c in held if c[1] == op]
        if limit is not None and len(cells) > limit:
            cells = random.Random(f"eval/{seed}/{op}").sample(cells, limit)
        prompts = [query_in(template, *c)[0] for c in cells]
        gens = greedy_continuations(model, prompts, 6, stop_at_eos=False)
        hits = sum(integer_reaches(g.text, [answer_of(*c)]) for c, g in zip(cells, gens))
        out[op] = {"n": len(cells), "correct": hits, "accuracy": hits / len(cells)}
    return out


def template_accuracy(model: Model, held: list[tuple[int, str, int]], trained: tuple[str, ...],
                      limit: int = 50, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Held-out accuracy in every wording of the arithmetic suite (its paraphrases), ``limit`` pairs
    per operation each: whether the skill carries to wordings trained on (``trained``) and not."""
    out: dict[str, dict[str, Any]] = {}
    for t in (x for x in TEMPLATE_NAMES if x != FEW_SHOT):
        per_op = held_out_accuracy(model, held, limit, seed, template=t)
        n, hit = sum(r["n"] for r in per_op.values()), sum(r["correct"] for r in per_op.values())
        out[t] = {"n": n, "correct": hit, "accuracy": hit / n, "trained": t in trained}
    return out


def is_built(recipe: Recipe) -> bool:
    """The recipe's folder holds a finished build whose weights match its manifest."""
    folder = folder_of(recipe)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("recipe_digest") == recipe.digest() and manifest.get("weights_sha256") == weights_sha(folder)


def derive(name_or_recipe: str | Recipe, *, progress: bool = True, force: bool = False) -> Path:
    """Build (or find) a derived model; returns its folder (config, tokenizer, safetensors,
    manifest). A LoRA recipe whose adapter ships with editscope (:data:`SHIPPED`) is built by merging
    that adapter into the base (seconds) instead of training. ``force`` rebuilds a finished one by
    training, shipped adapter or not."""
    recipe = _recipe(name_or_recipe)
    folder = folder_of(recipe)
    if not force and is_built(recipe):
        return folder
    if folder.exists():
        if not force:
            print(f"note: the cached {recipe.name} at {folder} does not match its manifest; rebuilding",
                  file=sys.stderr)
        shutil.rmtree(folder)
    shipped = None if force else shipped_folder(recipe)
    if shipped is not None:
        return _install_shipped(recipe, shipped, folder, progress)
    train, held = recipe.data.split()
    model = _load_base(recipe)
    t0 = time.perf_counter()
    ckpt = folder.with_name(folder.name + ".partial")
    if recipe.method == "lora":
        _add_adapters(model, recipe)
    losses, earlier, runs = _train(recipe, model, train, ckpt, progress, t0)
    seconds = earlier + time.perf_counter() - t0
    adapter = None
    if recipe.method == "lora":
        # the model is the base with the stored (bf16) adapter merged: exactly what a shipped adapter gives
        adapter = _adapter_state(model)
        model = merged_model(recipe, adapter)
    manifest = {
        "name": recipe.name, "recipe": recipe.model_dump(mode="json"), "recipe_digest": recipe.digest(),
        "base": recipe.base, "train_pairs": len(train), "held_out_pairs": len(held),
        "data_sha256": data_digest(train), "held_out_sha256": data_digest(held),
        "losses": losses, **evaluation(recipe, model, held),
        "build_seconds": round(seconds, 1), "build_runs": runs,
        "torch_threads": torch.get_num_threads(), "weights_fingerprint": fingerprint_of(tensor_digests(model.hf)),
    }
    _write(model, folder, manifest, adapter)
    clear_checkpoint(ckpt)
    return folder


def evaluation(recipe: Recipe, model: Model, held: list[tuple[int, str, int]]) -> dict[str, Any]:
    """The manifest's evaluation of a built model: held-out accuracy per operation and per wording."""
    return {"held_out_accuracy": held_out_accuracy(model, held, recipe.eval_limit, recipe.seed),
            "held_out_wordings": template_accuracy(model, held, recipe.data.templates, seed=recipe.seed)}


def _write(model: Model, folder: Path, manifest: dict[str, Any], adapter: dict[str, torch.Tensor] | None) -> None:
    """Write the model, its manifest (with the weights' SHA-256) and a LoRA recipe's adapter into a
    temporary folder, then move it into place."""
    tmp = folder.with_name(folder.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    model.hf.save_pretrained(tmp, safe_serialization=True)
    model.tokenizer.save_pretrained(tmp)
    if adapter is not None:
        save_file(adapter, str(tmp / ADAPTER))
    manifest = {**manifest, "weights_sha256": weights_sha(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder)


# ---- LoRA recipes: PEFT adapters, stored in bf16, merged deterministically

def _lora_config(model: Model, recipe: Recipe):
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    spec = recipe.lora or LoraSpec()  # a model_copy(update=...) skips the validator that fills it in
    head = model.hf.get_output_embeddings()
    targets = [n for n, m in model.hf.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and m is not head]
    if not targets:
        raise RecipeError(f"method lora: {recipe.base} has no linear projections to adapt")
    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, bias="none",
                      target_modules=targets, fan_in_fan_out=model.arch.conv1d)


def _add_adapters(model: Model, recipe: Recipe):
    """Inject the recipe's LoRA adapters into ``model.hf`` in place (PEFT); returns the PEFT wrapper."""
    from peft import get_peft_model

    torch.manual_seed(recipe.seed)  # the adapters' initialisation (A random, B zero)
    return get_peft_model(model.hf, _lora_config(model, recipe))


def _adapter_params(model: Model) -> dict[str, nn.Parameter]:
    """The injected LoRA adapters' parameters by PEFT's names (as the shipped file holds them)."""
    return {n: p for n, p in model.hf.named_parameters() if "lora_" in n}


def _adapter_state(model: Model) -> dict[str, torch.Tensor]:
    """The trained adapters, name -> bf16 tensor."""
    return {n: p.detach().to(torch.bfloat16).contiguous() for n, p in _adapter_params(model).items()}


def merged_model(recipe: Recipe, adapter: dict[str, torch.Tensor]) -> Model:
    """A fresh base model with ``adapter`` merged by PEFT in float64 and rounded to fp32 once, so the
    merged weights are the same bits on any machine (bf16 products are exact in float64)."""
    model = _load_base(recipe)
    dtype = next(model.hf.parameters()).dtype
    peft = _add_adapters(model, recipe)
    expected = set(_adapter_params(model))
    if set(adapter) != expected:
        missing, extra = sorted(expected - set(adapter)), sorted(set(adapter) - expected)
        raise DerivedModelError(f"{recipe.name}: the adapter does not fit {recipe.base} (missing {missing[:3]}, "
                                f"unexpected {extra[:3]}); rebuild it with editscope derive {recipe.name} --force")
    peft.to(torch.float64)
    with torch.no_grad():
        params = _adapter_params(model)
        for n, t in adapter.items():  # exact bf16 values in float64
            params[n].copy_(t.to(torch.float64))
    hf = peft.merge_and_unload()
    model.hf = hf.to(dtype)
    model.hf.eval()
    return model


#: where adapters of LoRA recipes ship with editscope: ``<dir>/<name>-<digest>/`` holds ``adapter.safetensors``
#: and the ``manifest.json`` of the build that trained it
SHIPPED: list[Path] = [Path(__file__).with_name("shipped")]


def shipped_folder(recipe: Recipe) -> Path | None:
    """The shipped adapter folder of ``recipe`` (same name and digest), or None."""
    if recipe.method != "lora":
        return None
    for root in SHIPPED:
        cand = root / f"{recipe.name}-{recipe.digest()}"
        if (cand / ADAPTER).is_file() and (cand / MANIFEST).is_file():
            return cand
    return None


def ship(name_or_recipe: str | Recipe, dest: Path | None = None) -> Path:
    """Copy a built LoRA recipe's adapter and manifest to ``dest`` (default: the first :data:`SHIPPED`
    folder), so that ``derive`` there merges it instead of training. Returns the written folder."""
    recipe = _recipe(name_or_recipe)
    check_shippable(recipe)
    if not is_built(recipe):
        raise DerivedModelError(f"{recipe.name} is not built here; run editscope derive {recipe.name} first")
    src = folder_of(recipe)
    out = (dest or SHIPPED[0]) / src.name
    out.mkdir(parents=True, exist_ok=True)
    for name in (ADAPTER, MANIFEST):
        shutil.copyfile(src / name, out / name)
    return out


def check_shippable(recipe: Recipe) -> None:
    """Refuse a recipe whose build cannot ship (only a LoRA recipe's adapter can)."""
    if recipe.method != "lora":
        raise RecipeError(f"{recipe.name}: only a LoRA recipe's adapter can ship (method is {recipe.method!r}: it "
                          "trains every weight)")


def _install_shipped(recipe: Recipe, shipped: Path, folder: Path, progress: bool) -> Path:
    """Build ``recipe`` from its shipped adapter: merge, check the weights against the build's
    fingerprint, write the cache entry with the shipped manifest (training losses, evaluation, time)."""
    manifest = json.loads((shipped / MANIFEST).read_text())
    if manifest.get("recipe_digest") != recipe.digest():
        raise DerivedModelError(f"{shipped}: its manifest is for recipe digest {manifest.get('recipe_digest')}, "
                                f"not {recipe.digest()}")
    if progress:
        print(f"note: {recipe.name}: merging the shipped adapter ({shipped.name}) into {recipe.base}", file=sys.stderr)
    adapter = load_file(str(shipped / ADAPTER))
    model = merged_model(recipe, adapter)
    fingerprint = fingerprint_of(tensor_digests(model.hf))
    if fingerprint != manifest["weights_fingerprint"]:
        # the shipped evaluation would describe weights that were never evaluated: refuse
        raise DerivedModelError(
            f"{recipe.name}: merging the shipped adapter {shipped} gives weights with fingerprint {fingerprint}, not "
            f"the build's {manifest['weights_fingerprint']} (another base model file, or a damaged adapter); train it "
            f"here with editscope derive {recipe.name} --force")
    _write(model, folder, {**manifest, "weights_fingerprint": fingerprint, "installed_from": "shipped adapter"},
           adapter)
    return folder


def _train(recipe: Recipe, model: Model, train: list[tuple[int, str, int]], ckpt: Path, progress: bool,
           t0: float | None = None) -> tuple[list, float, int]:
    """Fine-tuning on the answers (every weight, or a LoRA recipe's adapters), resuming from ``ckpt``
    when it holds a checkpoint. Returns the losses, the seconds earlier runs of the build spent (0 for
    a fresh one; ``t0``: when this run started) and how many runs the build took."""
    texts = recipe.data.examples(train)
    pairs = encode_pairs(model, [p for p, _ in texts], [c for _, c in texts])
    keep = _Keeper(recipe, model) if recipe.preserve is not None else None
    named = dict(model.hf.named_parameters()) if recipe.method == "full" else _adapter_params(model)
    names, params = list(named), list(named.values())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    t0 = time.perf_counter() if t0 is None else t0
    start, losses, earlier, runs = 0, [], 0.0, 1
    if has_checkpoint(ckpt):
        state = load_checkpoint(ckpt, named, opt, names)
        start, losses = int(state["step"]), list(state["losses"])
        earlier, runs = float(state.get("seconds", 0.0)), int(state.get("runs", 1)) + 1
        if progress:
            print(f"note: resuming {recipe.name} at step {start} of {recipe.steps}", file=sys.stderr)
    # trained in eval mode: no dropout, so a resumed build is the uninterrupted one exactly
    with trainable(model, params):
        for step in range(start, recipe.steps):
            batch = training_batch(model, [pairs[i] for i in batch_at(step, len(pairs), recipe.batch_size,
                                                                        recipe.seed)])
            opt.zero_grad(set_to_none=True)
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
                loss = continuation_nll(model, batch).mean()
                if keep is not None:
                    loss = loss + keep.loss(step)
            if not torch.isfinite(loss):
                raise DerivedModelError(f"{recipe.name}: the loss is {loss.item()} at step {step}; lower lr "
                                        f"({recipe.lr})")
            loss.backward()
            opt.step()
            losses.append([step, round(loss.item(), 5)])
            if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.steps:
                save_checkpoint(ckpt, named, opt, names, step + 1, losses,
                                extra={"seconds": earlier + time.perf_counter() - t0, "runs": runs})
                if progress:
                    print(f"{recipe.name}: step {step + 1}/{recipe.steps}, loss {loss.item():.4f}", file=sys.stderr)
    return losses, earlier, runs


class _Keeper:
    """The :class:`Preserve` term: a frozen base copy and the corpus cut into token windows."""

    def __init__(self, recipe: Recipe, model: Model):
        spec = recipe.preserve
        assert spec is not None
        self.spec, self.seed, self.model = spec, recipe.seed, model
        self.base = _load_base(recipe)
        self.base.hf.requires_grad_(False)
        ids: list[int] = []
        for doc in load_corpus(spec.corpus):
            ids += model.tokenizer(doc, add_special_tokens=False)["input_ids"]
        n = len(ids) // spec.tokens
        if n < spec.sequences:
            raise RecipeError(f"preserve.corpus {spec.corpus!r} holds {len(ids)} tokens, fewer than "
                              f"{spec.sequences} windows of {spec.tokens}; lower preserve.tokens or give a longer corpus")
        self.windows = torch.tensor(ids[: n * spec.tokens]).view(n, spec.tokens)

    def loss(self, step: int) -> torch.Tensor:
        """``weight * KL(base || model)``, nats per predicted token, on this step's windows."""
        idx = batch_at(step, len(self.windows), self.spec.sequences, self.seed + 1)
        x = self.windows[idx]
        with torch.no_grad():
            ref = torch.log_softmax(self.base.hf(input_ids=x).logits.float(), -1)
        cur = torch.log_softmax(self.model.hf(input_ids=x).logits.float(), -1)
        kl = (ref.exp() * (ref - cur)).sum(-1).mean()
        return self.spec.weight * kl


def manifest_of(name_or_recipe: str | Recipe) -> dict[str, Any] | None:
    """A built recipe's manifest, or None."""
    recipe = _recipe(name_or_recipe)
    p = folder_of(recipe) / MANIFEST
    return json.loads(p.read_text()) if p.is_file() else None


def derived_summary(name: str) -> dict[str, Any] | None:
    """What a study records about the derived model it ran on (None: ``name`` is not a built
    recipe): the recipe and its digest, training pairs, held-out accuracy per operation and per
    wording, the build time and the final training loss."""
    if name not in RECIPES:
        return None
    m = manifest_of(name)
    if m is None:
        return None
    return {"name": m["name"], "base": m["base"], "recipe_digest": m["recipe_digest"], "recipe": m["recipe"],
            "train_pairs": m["train_pairs"], "held_out_pairs": m["held_out_pairs"],
            "held_out_accuracy": m["held_out_accuracy"], "held_out_wordings": m.get("held_out_wordings"),
            "build_seconds": m["build_seconds"], "final_loss": m["losses"][-1][1] if m["losses"] else None}


register_model_source(ModelSource(names=lambda: list(RECIPES), build=lambda name: (derive(name), RECIPES[name].name)))

__all__ = ["ArithmeticData", "DerivedModelError", "LoraSpec", "Preserve", "RECIPES", "Recipe", "RecipeError", "SHIPPED", "derive",
           "derived_summary", "evaluation", "folder_of", "held_out_accuracy", "is_built", "manifest_of", "merged_model", "register_recipe",
           "check_shippable", "ship", "shipped_folder", "template_accuracy"]
