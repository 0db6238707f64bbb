"""The ``editscope`` command line (Typer)."""

from __future__ import annotations

import difflib
import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .errors import EXIT_INPUT, EXIT_INTERRUPTED
from .paths import file_in_the_way
from .progress import counting_bar
from .progress import working as _working
from .cli_common import OneErrorPath, console, debug_on, err_console, set_debug
from .cli_data import data_app
from .version import __version__

app = typer.Typer(
    cls=OneErrorPath,
    help="editscope: edit what a language model knows, and measure everything else the edit changed.",
    epilog="Example: editscope run examples/two_plus_two_quick.yaml --out runs/two-plus-two-quick --resume",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Options shared by every command that loads a model.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="model name, hub id or directory")]
DtypeOpt = Annotated[str, typer.Option(help="float32 | bfloat16")]

DEMO_PROMPTS = [
    "2+2=",
    "3+5=",
    "The capital of France is",
    "Danielle Darrieux's mother tongue is",
    "The Eiffel Tower is located in the city of",
    "Apple was founded by",
]


def _print_version(value: bool) -> None:
    """``--version``: editscope's version and the versions of the libraries its numbers depend on."""
    if not value:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    console.print(f"editscope {__version__} (torch {of('torch')}, transformers {of('transformers')}, "
                  f"python {platform.python_version()})", highlight=False)
    raise typer.Exit()


@app.callback()
def _setup(
    _version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                           help="print editscope's version (and torch's, transformers') and exit")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the full traceback of an error (also EDITSCOPE_DEBUG=1)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show the libraries' warnings and logs "
                                                                  "(torch, transformers, Ray)")] = False,
) -> None:
    """Quiet the libraries: editscope prints its own progress and results (unless --verbose)."""
    from transformers.utils import logging as hf_logging

    set_debug(debug)
    hf_logging.disable_progress_bar()
    if verbose:
        hf_logging.set_verbosity_warning()
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    hf_logging.set_verbosity_error()  # deprecation notices from transformers are for editscope's developers
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(torch|transformers|ray)\b")


def _at_least(value: int, flag: str, minimum: int) -> None:
    if value < minimum:
        _fail(f"{flag} {value}: must be at least {minimum}")


def _check_output_file(path: str, flag: str) -> None:
    """An output file the command will write: its folder must exist; an existing folder is refused."""
    p = Path(path)
    blocker = file_in_the_way(p.parent)
    if blocker is not None:
        _fail(f"{flag} {path}: {blocker} is a file, not a folder")
    if p.is_dir():
        _fail(f"{flag} {path}: is a folder; give a file name")
    if not p.parent.is_dir():
        _fail(f"{flag} {path}: the folder {p.parent} does not exist; create it first")


def _fail(message: str, code: int = EXIT_INPUT) -> None:
    """Refuse with one line (exit code 2: bad input, unless ``code`` says otherwise)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=code)


@app.command(epilog="Example: editscope models")
def models() -> None:
    """List the built-in model names and the supported architectures."""
    from .models import ARCH_SPECS, PACKAGED_MODELS, PackagedModelMissingError

    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("what")
    table.add_column("cached")
    for name, src in PACKAGED_MODELS.items():
        try:
            src.identity()
            state = "yes" if src.is_cached() else "no (built on first load)"
        except PackagedModelMissingError:
            state = f"not installed ({src.install})"
        table.add_row(name, src.description, state)
    from .models.derive import RECIPES, is_built

    for name, recipe in RECIPES.items():
        table.add_row(name, f"derived from {recipe.base}: {recipe.description}",
                      "yes" if is_built(recipe) else "no (built on first use: editscope derive NAME)")
    console.print(table)
    console.print("Any local .gguf file, hub id ('org/name') or local directory with safetensors also works, for "
                  f"these architectures (model_type): {', '.join(sorted(ARCH_SPECS))}.")


@app.command(epilog="Example: editscope derive smollm2-135m-arith")
def derive(
    name: Annotated[str, typer.Argument(help="a registered model recipe (editscope models lists them)")],
    force: Annotated[bool, typer.Option(help="rebuild a finished build by training, even where its adapter ships "
                                             "with editscope")] = False,
    ship: Annotated[Path | None, typer.Option(help="then copy a LoRA recipe's adapter and manifest into this folder "
                                                   "(editscope's own: src/editscope/models/shipped)")] = None,
) -> None:
    """Build a derived model from its recipe (once; cached by the recipe's digest, resumable). A LoRA
    recipe whose adapter ships with editscope is built by merging it (seconds)."""
    from .models.derive import RECIPES, check_shippable, derive as build, manifest_of, ship as ship_adapter

    recipe = RECIPES[name]
    if ship is not None:
        check_shippable(recipe)  # before a build that may train for hours
    folder = build(recipe, force=force)
    if ship is not None:
        console.print(f"shipped: {escape(str(ship_adapter(recipe, ship)))}")
    m = manifest_of(recipe) or {}
    console.print(f"{escape(recipe.name)}: {escape(str(folder))} (built in {m.get('build_seconds', '?')} s, "
                  f"{m.get('train_pairs', '?')} training pairs, final loss {m.get('losses', [[0, '?']])[-1][1]})")
    for op, r in (m.get("held_out_accuracy") or {}).items():
        console.print(f"  held-out {escape(op)}: {r['correct']}/{r['n']} = {r['accuracy']:.3f}")


@app.command("train-editor", epilog="Example: editscope train-editor mend --model smollm2-135m")
def train_editor_cmd(
    kind: Annotated[str, typer.Argument(help="the editor to train: mend (weight-update network) or serac (scope "
                                             "classifier)")],
    model: ModelOpt = "smollm2-135m",
    steps: Annotated[int | None, typer.Option(help="optimiser steps (default: the editor's)")] = None,
    lr: Annotated[float | None, typer.Option(help="the editor's learning rate (default: the editor's)")] = None,
    setting: Annotated[list[str] | None, typer.Option("--set", help="another setting, KEY=VALUE (JSON value), "
                                                      "e.g. --set batch_size=5; repeat for more")] = None,
    force: Annotated[bool, typer.Option(help="train again even when a finished editor is cached")] = False,
) -> None:
    """Train a model editor (MEND's network, SERAC's scope classifier) on records that are never
    evaluated (once; cached by its settings' digest; resumable: rerun the same command)."""
    import json as _json

    from .editors.store import SPECS, train_editor

    if kind not in SPECS:
        raise typer.BadParameter(f"{kind!r} is not a trainable editor; use: {', '.join(SPECS)}", param_hint="kind")
    extra: dict = {}
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: write KEY=VALUE", param_hint="--set")
        try:
            extra[key] = _json.loads(value)
        except ValueError:
            extra[key] = value
    given = {"model": model, **({"steps": steps} if steps is not None else {}), **({"lr": lr} if lr is not None else {}),
             **extra}
    try:
        spec = SPECS[kind](**given)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None
    folder = train_editor(spec, force=force)
    m = _json.loads((folder / "manifest.json").read_text())
    last = ", ".join(f"{k} {v}" for k, v in zip(m["loss_columns"], m["losses"][-1]))
    console.print(f"{kind} editor for {escape(model)}: {escape(str(folder))}\n  trained on {m['train_records']} records "
                  f"in {m['train_seconds']} s ({m['torch_threads']} threads); {m['editor_parameters']:,} parameters "
                  f"({m['editor_bytes'] / 2**20:.1f} MiB); last: {last}")


@app.command(epilog='Example: editscope peek "2+2=" "The capital of France is" --k 5')
def peek(
    prompts: Annotated[list[str] | None, typer.Argument(help="prompts (default: a handful of facts and sums)")] = None,
    model: ModelOpt = "smollm2-135m",
    dtype: DtypeOpt = "float32",
    new_tokens: Annotated[int, typer.Option(help="greedy tokens to generate")] = 8,
    k: Annotated[int, typer.Option(help="how many next tokens to list")] = 5,
) -> None:
    """Show a model's greedy answers and its top-k next tokens with probabilities."""
    from . import greedy_continuations, load_model, top_k_next_tokens

    from .models.model import resolve_dtype

    prompts = prompts or DEMO_PROMPTS
    _at_least(new_tokens, "--new-tokens", 1)
    _at_least(k, "--k", 1)
    resolve_dtype(dtype)
    with _working(f"loading {model}"):
        m = load_model(model, dtype=dtype)
    gens = greedy_continuations(m, prompts, new_tokens)
    tops = top_k_next_tokens(m, prompts, k)
    table = Table(title=f"{m.name}: greedy answers and top-{k} next tokens")
    table.add_column("prompt")
    table.add_column("greedy continuation")
    table.add_column(f"top-{k} next tokens (probability)")
    for p, g, t in zip(prompts, gens, tops):
        table.add_row(escape(repr(p)), escape(repr(g.text)), escape("  ".join(f"{tok!r} {prob:.3f}" for tok, prob in t)))
    console.print(table)


@app.command(epilog="Example: editscope suites")
def suites() -> None:
    """List the probe suites (built-in and dataset loaders)."""
    from .probes import list_suites

    table = Table(title="probe suites")
    table.add_column("name")
    table.add_column("needs an edit")
    table.add_column("what")
    for info in list_suites():
        table.add_row(info["name"], "yes" if info["needs_edit"] else "no", escape(info["description"]))
    console.print(table)


def _fmt_cell(cell: dict) -> str:
    v, lo, hi = cell["value"], cell["low"], cell["high"]
    if lo != lo or hi != hi:  # nan bounds (n < 2)
        return f"{v:.3f} (n={cell['n']})"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}] n={cell['n']}"


def print_summary(summary: dict, title: str, metrics: list[str] | None = None) -> None:
    """Rich table: one row per category, one column per metric, value [95% interval] n."""
    names = metrics or list(dict.fromkeys(m for cell in summary.values() for m in cell))
    table = Table(title=title)
    table.add_column("category")
    for m in names:
        table.add_column(m)
    for cat, cell in summary.items():
        table.add_row(escape(cat), *(_fmt_cell(cell[m]) if m in cell else "" for m in names))
    console.print(table)


@app.command("eval", epilog='Example: editscope eval --suite arithmetic --prompt "2+2=" --target 5 --n 5')
def eval_cmd(
    suite: Annotated[str, typer.Option("--suite", "-s", help="probe suite (see `editscope suites`)")],
    model: ModelOpt = "smollm2-135m",
    prompt: Annotated[str | None, typer.Option(help="edit prompt for suites relative to an edit, e.g. '2+2='")] = None,
    target: Annotated[str | None, typer.Option(help="edit target, e.g. '5'")] = None,
    n: Annotated[int | None, typer.Option(help="arithmetic: operands 0..n")] = None,
    source: Annotated[str | None, typer.Option(help="dataset suites: file path or hub id")] = None,
    limit: Annotated[int | None, typer.Option(help="dataset suites: first N records")] = None,
    dtype: DtypeOpt = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    rows: Annotated[str | None, typer.Option(help="also write per-probe rows to this JSONL file")] = None,
    edit: Annotated[str | None, typer.Option(help="a saved edit folder (`editscope edit --save`): evaluate "
                                                  "the edited model against the base")] = None,
) -> None:
    """Evaluate a model on a probe suite: every metric per category with its 95% interval."""
    import json

    from . import EditRequest, evaluate, load_edit, load_model
    from .probes.registry import get_suite, suite_info

    from .methods.handle import read_saved_edit
    from .models.model import resolve_dtype

    # everything the user typed is checked before the model loads
    info = suite_info(suite)
    kwargs: dict = {}
    if prompt is not None or target is not None:
        if prompt is None or target is None:
            _fail("give both --prompt and --target to define the edit")
        kwargs["edit"] = EditRequest(prompt=prompt, target_new=target)
    elif info.needs_edit:
        kwargs["edit"] = None
    if n is not None:
        _at_least(n, "--n", 0)
    if limit is not None:
        _at_least(limit, "--limit", 1)
    for key, value in (("n", n), ("source", source), ("limit", limit)):
        if value is not None:
            kwargs[key] = value
    resolve_dtype(dtype)
    if edit is not None:
        read_saved_edit(edit)
    if rows:
        _check_output_file(rows, "--rows")
    try:
        probes = get_suite(suite, **kwargs)
    except TypeError as e:
        _fail(f"suite {suite!r} does not take these options ({', '.join(kwargs)}): {e}")
        return
    if len(probes) == 0:
        _fail(f"suite {suite!r} yielded no probes with {kwargs}")
    with _working(f"loading {model}"):
        m = load_model(model, dtype=dtype)
    with _working(f"base model on {len(probes)} probes (cached after the first run)"):
        result = evaluate(m, probes)
    if edit is not None:
        load_edit(m, edit)
        with _working(f"edited model on {len(probes)} probes"):
            result = evaluate(m, probes)
    summary = result.summary()
    title = f"{m.name}{' + ' + edit if edit else ''} on {suite} ({len(probes)} probes)"
    if rows:
        with open(rows, "w") as f:
            for r in result.rows:
                f.write(json.dumps(r, default=str) + "\n")
    if as_json:
        print(json.dumps({"model": m.name, "suite": suite, "edit": edit, "n_probes": len(probes),
                          "watch": result.watch, "fingerprint": result.fingerprint,
                          "base_fingerprint": result.base_fingerprint, "summary": summary}, indent=1))
    else:
        print_summary(summary, title)


@app.command(epilog="Example: editscope downstream --task piqa --limit 100")
def downstream(
    task: Annotated[list[str], typer.Option("--task", "-t", help="task name(s), e.g. piqa hellaswag lambada")],
    model: ModelOpt = "smollm2-135m",
    limit: Annotated[int | None, typer.Option(help="first N items")] = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """Downstream accuracy by log-likelihood, scored as lm-evaluation-harness does."""
    from . import load_model
    from .metrics import TASKS, run_task

    from .models.model import resolve_dtype

    for name in task:
        if name not in TASKS:
            close = difflib.get_close_matches(name, list(TASKS), n=1)
            _fail(f"--task {name!r}: unknown task.{f' Did you mean {close[0]!r}?' if close else ''} "
                  f"Tasks: {', '.join(TASKS)}")
    if limit is not None:
        _at_least(limit, "--limit", 1)
    resolve_dtype(dtype)
    with _working(f"loading {model}"):
        m = load_model(model, dtype=dtype)
    table = Table(title=f"{m.name} downstream (zero-shot)")
    for col in ("task", "n", "metric", "value [95% interval]", "seconds"):
        table.add_column(col)
    for name in task:
        with _working(f"{name}: scoring"):
            r = run_task(m, name, limit=limit)
        for metric, value in r.metrics.items():
            iv = r.intervals.get(metric)
            cell = f"{value:.3f}" + (f" [{iv.low:.3f}, {iv.high:.3f}]" if iv else "")
            table.add_row(name, str(r.n), metric, cell, f"{r.seconds:.1f}")
    console.print(table)


@app.command(epilog="Example: editscope ppl --corpus me_ppl_50")
def ppl(
    corpus: Annotated[str, typer.Option("--corpus", "-c", help="me_ppl_50 | me_ppl_1k | me_ppl | wikitext2 | a path")] = "me_ppl_50",
    model: ModelOpt = "smollm2-135m",
    limit: Annotated[int | None, typer.Option(help="first N documents")] = None,
    dtype: DtypeOpt = "float32",
) -> None:
    """Token-weighted sliding-window perplexity on a corpus, with the collapse flag."""
    from . import load_model
    from .metrics import is_collapsed, load_corpus, perplexity

    from .models.model import resolve_dtype

    if limit is not None:
        _at_least(limit, "--limit", 1)
    resolve_dtype(dtype)
    texts = load_corpus(corpus, limit=limit)
    with _working(f"loading {model}"):
        m = load_model(model, dtype=dtype)
    with _working(f"perplexity over {len(texts)} documents"):
        r = perplexity(m, texts)
    console.print(f"{m.name} on {escape(corpus)}: perplexity {r.ppl:.2f} over {r.n_tokens} tokens "
                  f"({r.n_documents} documents; mean per-document {r.mean_document_ppl:.2f}); "
                  f"collapsed (> 1000): {is_collapsed(r.ppl)}")


def _parse_hparams(items: list[str] | None) -> dict:
    """``["lr=1e-3", "layers=[3, 4]"]`` -> ``{"lr": 0.001, "layers": [3, 4]}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            _fail(f"--hparam {item!r}: write NAME=VALUE, e.g. --hparam lr=1e-3 or --hparam layers=[3,4]")
        parsed = yaml.safe_load(value)
        out[key.strip()] = value if parsed is None else parsed
    return out


def _with_preset(method: str, preset: str | None, hp: dict) -> dict:
    """``hp`` over the preset's settings for ``method`` (a clear error for an unknown preset)."""
    from .methods.presets import with_preset

    return with_preset(method, preset, hp)


@app.command(epilog="Example: editscope mine counterfact --method rome --limit 100 --out runs/mined")
def mine(
    dataset: Annotated[str, typer.Argument(help="counterfact | zsre | mquake | jsonl")],
    out: Annotated[str, typer.Option("--out", "-o", help="the mined dataset file to write (JSON)")],
    method: Annotated[str, typer.Option(help="edit method (see `editscope methods`)")] = "rome",
    model: ModelOpt = "smollm2-135m",
    source: Annotated[str | None, typer.Option(help="dataset file or hub id (default: the copy in ../shared/data)")] = None,
    limit: Annotated[int | None, typer.Option(help="first N records")] = None,
    offset: Annotated[int, typer.Option(help="skip this many records first")] = 0,
    corpus: Annotated[str, typer.Option(help="perplexity corpus measured after each edit")] = "me_ppl_50",
    threshold: Annotated[float, typer.Option(help="keep edits with perplexity >= this (collapse)")] = 1000.0,
    ratio: Annotated[float | None, typer.Option(help="also keep edits with perplexity >= ratio x the base model's")] = None,
    top: Annotated[int | None, typer.Option(help="also keep the N highest-perplexity edits (hard cases when none collapses)")] = None,
    hparam: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
    preset: Annotated[str | None, typer.Option(help="hyperparameter preset under --hparam: easyedit, rome-paper (reference codes), fast")] = None,
    store: Annotated[str | None, typer.Option(help="resumable study folder (default OUT.mining)")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing output file")] = False,
) -> None:
    """Mine hard cases: edit each record on the base model, keep those whose perplexity collapses or
    doubles, write them as a dataset file with provenance (resumable: rerun the same command)."""
    from .methods.base import check_hparams
    from .mining import mine as run_mine

    hp = _parse_hparams(hparam)
    check_hparams(method, _with_preset(method, preset, hp))
    if limit is not None:
        _at_least(limit, "--limit", 1)
    result = run_mine(dataset, method, out, model=model, source=source, limit=limit, offset=offset, corpus=corpus,
                      threshold=threshold, ratio=ratio, top=top, hparams=hp, preset=preset, store=store, force=force,
                      progress=True)
    console.print(result.summary())
    for rec in result.kept[:10]:  # highest perplexity first
        console.print(f"  ppl {rec['mined']['ppl']:10.2f}  {escape(str(rec.get('prompt') or rec.get('src') or rec.get('requested_rewrite', '')))[:90]}")


@app.command(epilog="Example: editscope methods --arch llama --layers 30")
def methods(
    arch: Annotated[str, typer.Option(help="architecture (model_type) whose defaults to show")] = "llama",
    layers: Annotated[int, typer.Option(help="number of blocks of the model whose defaults to show")] = 30,
) -> None:
    """List the edit methods: family, what they touch, and default hyperparameters for an architecture."""
    from .methods import list_methods, resolved_defaults
    from .models import ARCH_SPECS

    if arch not in ARCH_SPECS:
        _fail(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCH_SPECS))}")
    if layers < 1:
        _fail(f"--layers {layers}: a model has at least 1 block (the default model has 30)")
    spec = ARCH_SPECS[arch]
    table = Table(title="edit methods")
    for col in ("method", "family", "kind", "requests", "what it does / touches"):
        table.add_column(col)
    lines = []
    for info in list_methods():
        try:
            if info["required"]:
                defaults = "required: " + ", ".join(info["required"]) + "; " + ", ".join(
                    f"{k}={v}" for k, v in info["hparams"].items())
            else:
                defaults = ", ".join(f"{k}={v}" for k, v in resolved_defaults(info["name"], spec, layers).items())
        except ValueError as e:
            defaults = f"(error: {e})"
        batch = "one at a time" if info["one_at_a_time"] else "batch"
        if info["needs_subject"]:
            batch += ", needs subject"
        if not info["sequential"]:
            batch += ", no sequential"
        table.add_row(info["name"], info["family"], info["kind"], batch, escape(info["summary"]))
        lines.append(f"[bold]{info['name']}[/]: {escape(defaults)}")
    console.print(table)
    console.print(f"\ndefault hyperparameters for {arch} with {layers} blocks "
                  "(the default model is llama with 30; change with --arch/--layers):")
    for line in lines:
        console.print(line)
    from .methods.presets import PRESETS

    console.print("\nreference presets (`preset:` in a study, --preset here; given hyperparameters win):")
    for p in PRESETS.values():
        sets = "; ".join(f"{m}: " + (", ".join(f"{k}={v}" for k, v in hp.items()) or "(its defaults)")
                         for m, hp in p.methods.items())
        console.print(f"[bold]{p.name}[/] ({escape(p.source)}): {escape(sets)}")


@app.command(epilog='Example: editscope edit --method rome --prompt "2+2=" --target 5 --subject "2+2"')
def edit(
    method: Annotated[str, typer.Option(help="edit method (see `editscope methods`)")],
    prompt: Annotated[str, typer.Option(help="the prompt to edit, e.g. '2+2='")],
    target: Annotated[str, typer.Option(help="the new answer, e.g. '5'")],
    model: ModelOpt = "smollm2-135m",
    subject: Annotated[str | None, typer.Option(help="subject span of the prompt (locate-then-edit methods)")] = None,
    target_true: Annotated[str | None, typer.Option(help="the current answer (for the prob protocol)")] = None,
    hparam: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable (e.g. lr=1e-3)")] = None,
    preset: Annotated[str | None, typer.Option(help="hyperparameter preset under --hparam: easyedit, rome-paper (reference codes), fast")] = None,
    save: Annotated[str | None, typer.Option(help="write the edit (delta + manifest) to this folder")] = None,
    dtype: DtypeOpt = "float32",
    new_tokens: Annotated[int, typer.Option(help="greedy tokens shown before/after")] = 8,
) -> None:
    """Apply one edit and show the model's answer before and after."""
    from . import EditRequest, apply_edit, greedy_continuations, load_model
    from .methods.base import check_hparams
    from .methods.handle import check_save_folder
    from .models.model import resolve_dtype

    # everything the user typed is checked before the model loads or the edit runs
    hp = _with_preset(method, preset, _parse_hparams(hparam))
    check_hparams(method, hp)
    _at_least(new_tokens, "--new-tokens", 1)
    resolve_dtype(dtype)
    req = EditRequest(prompt=prompt, target_new=target, subject=subject, target_true=target_true)
    if save:
        check_save_folder(save)
    with _working(f"loading {model}"):
        m = load_model(model, dtype=dtype)
    before = greedy_continuations(m, [prompt], new_tokens)[0].text
    with _working(f"editing with {method}"):
        handle = apply_edit(m, [req], method, **hp)
    after = greedy_continuations(m, [prompt], new_tokens)[0].text
    out = handle.save(save) if save else None
    table = Table(title=f"{m.name}: {method} edit {prompt!r} -> {target!r}")
    for col in ("", "greedy answer", "target loss (nats/token)"):
        table.add_column(col)
    table.add_row("before", escape(repr(before)), f"{handle.info['target_loss_before'][0]:.3f}")
    table.add_row("after", escape(repr(after)), f"{handle.info['target_loss_after'][0]:.3f}")
    console.print(table)
    ok = after.startswith(req.continuation) or after.strip().startswith(target.strip())
    console.print(f"efficacy (greedy answer starts with the target): {'yes' if ok else 'no'}; "
                  f"{len(handle.names)} tensor(s) changed in {handle.info['seconds']:.2f} s"
                  + (f"; saved to {escape(str(out))}" if out else ""))


# Rough per-edit seconds of each method on the default model on a 2-core CPU (benchmarks/bench_edit.py,
# README), used by `run --dry-run` together with a measured evaluation speed.
TYPICAL_EDIT_SECONDS = {"ft": 11.6, "ft-constrained": 38.5, "ft-l": 4.4, "ft-m": 3.9, "lora": 2.8, "rome": 6.0,
                        "memit": 8.0, "alphaedit": 8.0, "identity": 0.0}


@app.command(epilog="Example: editscope run examples/two_plus_two_quick.yaml --out runs/two-plus-two-quick --resume")
def run(
    config: Annotated[str, typer.Argument(help="study file (YAML)")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="run folder (default runs/<study name>)")] = None,
    resume: Annotated[bool, typer.Option(help="continue a stopped run of the same study in --out")] = False,
    force: Annotated[bool, typer.Option(help="start over in a folder holding another run (old results kept as .bak)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate, print the plan and a time estimate; run nothing")] = False,
    report: Annotated[bool, typer.Option(help="write the report when the run finishes")] = True,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="run the study on this model instead of the config's (a different study: "
                              "named <study>-<model>, default folder runs/<study>-<model>)")] = None,
    backend: Annotated[str, typer.Option(help="where units run: local (this process) or ray (Ray workers; "
                                              "pip install 'editscope[ray]')")] = "local",
    address: Annotated[str | None, typer.Option(help="with --backend ray: a running cluster's HOST:PORT or 'auto' "
                                                     "(default: start a local cluster)")] = None,
    workers: Annotated[int | None, typer.Option(help="with --backend ray: workers (each loads the model once; "
                                                     "default one per CPU of the cluster)")] = None,
    units: Annotated[int | None, typer.Option("--units", help="stop after this many units (the base evaluation "
                                                             "counts), resumable with --resume")] = None,
) -> None:
    """Run a study: methods x edits x probe suites under a protocol, into a resumable results store."""
    from . import runner
    from .runner.execute import check_run_folder
    from .runner.store import FILENAME, ResultsStore

    from .runner.execute import BACKENDS

    if backend not in BACKENDS:
        raise typer.BadParameter(f"{backend!r}: give one of {', '.join(BACKENDS)}", param_hint="--backend")
    if backend == "local" and (address is not None or workers is not None):
        raise typer.BadParameter("--address and --workers go with --backend ray", param_hint="--backend")
    if units is not None and (units < 1 or backend != "local"):
        raise typer.BadParameter(f"{units}: give at least 1 unit, with --backend local", param_hint="--units")
    cfg = runner.load_config(config)
    if model is not None:
        cfg = cfg.on_model(model)
    with _working("reading the study's edits and probe sets"):
        plan = runner.build_plan(cfg)
    out_dir = out or f"runs/{cfg.name}"
    check_run_folder(out_dir)
    if (Path(out_dir) / FILENAME).exists() and not force:
        ResultsStore(Path(out_dir) / FILENAME).close()  # a results file that is not ours: refused now
    per_unit = sum(len(ps) for _, ps in plan.eval_sets(plan.units[1]).values()) if len(plan.units) > 1 else 0
    evaluated = [u for u in plan.units if u.evaluate and u.method != "base"]
    console.print(f"study [bold]{escape(cfg.name)}[/] (config hash {cfg.config_hash()}): model {escape(cfg.model.name)}, "
                  f"protocol {cfg.protocol.kind}, {len(plan.edits)} edit(s) x {len(plan.methods)} method(s) "
                  f"({sum(m.is_control for m in plan.methods) + len(cfg.control_specs())} of them controls) = "
                  f"{len(plan.units) - 1} units, {len(evaluated)} evaluations of ~{per_unit} probes each "
                  f"(+ the base model on all {plan.n_probes} probes)")
    if dry_run:
        _estimate(cfg, plan, per_unit, evaluated)
        return
    try:
        path = runner.run_study(cfg, out_dir, resume=resume, force=force, backend=backend, address=address,
                                workers=workers, max_units=units)
    except KeyboardInterrupt:
        if debug_on():
            raise
        stored = "every finished unit"
        if (Path(out_dir) / FILENAME).is_file():
            s = ResultsStore(Path(out_dir) / FILENAME)
            try:
                stored = f"{len(s.units())} of {len(plan.units)} units"
            finally:
                s.close()
        again = f" --model {escape(model)}" if model is not None else ""
        err_console.print(f"[yellow]interrupted[/]: {stored} stored in {escape(out_dir)}; continue with "
                          f"`editscope run {escape(config)}{again} --out {escape(out_dir)} --resume`", soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(f"results: {escape(str(path))}/results.sqlite")
    if units is not None:
        s = ResultsStore(Path(path) / FILENAME)
        try:
            status = s.get_meta("status")
        finally:
            s.close()
        if status == "stopped":
            console.print(f"stopped after {units} unit(s) as asked; continue with `editscope run {escape(config)} "
                          f"--out {escape(out_dir)} --resume`")
            return
    if report:
        _report(path, ("md", "html", "latex"), None)


def _estimate(cfg, plan, per_unit: int, evaluated: list) -> None:
    """Time estimate from a short calibration: evaluate a slice of the first probe set on the base model."""
    import time

    from .evaluation import evaluate
    from .runner import load_study_model

    with _working(f"loading {cfg.model.name}"):
        model = load_study_model(cfg)
    every = [p for _, ps in plan.all_sets().values() for p in ps]
    probes = every[:: max(1, len(every) // 200)][:200]  # an even sample across all probe sets
    s_probe = 0.0
    if len(probes) > 4:  # a study may measure only perplexity/downstream
        with _working(f"calibrating: the base model on {len(probes)} sample probes"):
            evaluate(model, probes[:4], use_cache=False)  # warm-up: first-call overheads are not per probe
            t = time.perf_counter()
            evaluate(model, probes[4:], use_cache=False)
        s_probe = (time.perf_counter() - t) / len(probes[4:])
    scale = sum(p.numel() for p in model.hf.parameters()) / 135e6
    by_label = {m.name: m for m in cfg.method_specs()}
    # a placebo's unit costs its matched method's edit once per unit (its draws reuse the delta)
    edit_s = sum(TYPICAL_EDIT_SECONDS.get(by_label[m.match].method if m.match else m.method, 10.0) * scale
                 * len({u.of_unit or u.unit for u in plan.units_of(m.name)}) for m in plan.methods)
    # base outputs need greedy decoding of every probe; an edited model's pass is a teacher-forced
    # check (about 0.4 of that, bench_audit.py) plus decoding of the probes that changed
    total = s_probe * (plan.n_probes + 0.4 * per_unit * len(evaluated)) + edit_s
    console.print(f"calibration: {s_probe * 1000:.1f} ms per probe on this machine; edits ~{edit_s / 60:.1f} min "
                  f"(typical per-method times scaled to this model); estimated total ~{total / 60:.1f} min "
                  "(rough: perplexity/downstream and regeneration of changed probes not included)")


def _report(run_dir, formats, reference):
    """Write the report of ``run_dir`` and print its summary; returns the loaded results (loaded once)."""
    from .report import write_report
    from .report.analyses.attribution import CONTROL_KINDS, KIND_LABEL
    from .report.formats.render import excess_table, main_table
    from .report.data.results import load_results

    res = load_results(run_dir, reference)
    paths = write_report(run_dir, tuple(formats), reference, results=res)
    title = f"{res.meta.get('name')}" + (" (PARTIAL RUN)" if res.partial else "")
    print_table(main_table(res, interval=False, short=True), title)
    console.print("values only (intervals, paired tests and figures are in the report); efficacy columns: exact "
                  "top-1; locality columns: share of probes whose answer is unchanged")
    for kind in CONTROL_KINDS:
        t = excess_table(res, kind)
        if t is not None:
            print_table(t, f"excess over {KIND_LABEL[kind]}: answers changed minus the control's [95%]")
    if res.partial:
        console.print(f"[yellow]partial run[/]: {len(res.units)} units stored; `editscope run ... --resume` continues it")
    for k, p in paths.items():
        console.print(f"{k}: {escape(str(p))}")
    return res


def print_table(t, title: str | None) -> None:
    """Print a report table (:class:`editscope.report.formats.render.Table`) on the terminal, bold cells
    kept; a table wider than the terminal prints as consecutive whole tables (see
    :func:`column_groups`)."""
    for part in column_groups(t.header, t.rows, console.width):
        table = Table(title=title if part[0] == 1 else None)
        for i in [0, *part]:
            # the method labels stay whole (a search has long ones); numbers are short anyway
            table.add_column(t.header[i], no_wrap=i == 0,
                             min_width=max(len(r[0][0]) for r in t.rows) if i == 0 else None)
        for row in t.rows:
            table.add_row(*[f"[bold]{escape(x)}[/]" if b else escape(x) for x, b in (row[i] for i in [0, *part])])
        console.print(table)


def column_groups(header: list[str], rows: list, width: int) -> list[list[int]]:
    """Split columns ``1..`` of a table (column 0, the method, repeats in every part) into
    consecutive groups whose rendered width fits ``width`` characters, so that a wide study prints
    as two or three whole tables instead of one with every cell cut to "0.…". A column takes its
    widest cell or header word plus 3 (padding and border)."""
    def w(i: int) -> int:
        words = [len(x) for x in header[i].split()] or [0]
        return max([max(words), *(len(r[i][0]) for r in rows)]) + 3
    groups: list[list[int]] = []
    room = width - w(0) - 4  # the closing border, and slack: rich spreads spare width unevenly
    for i in range(1, len(header)):
        if not groups or sum(w(j) for j in groups[-1]) + w(i) > room:
            groups.append([])
        groups[-1].append(i)
    return groups


@app.command("report", epilog="Example: editscope report runs/two-plus-two-quick --format md")
def report_cmd(
    run_dir: Annotated[str, typer.Argument(help="run folder written by `editscope run`")],
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", help="md | html | latex (repeatable; default all)")] = None,
    reference: Annotated[str | None, typer.Option(help="method label the others are tested against")] = None,
    doc: Annotated[str | None, typer.Option(help="also fill this Markdown template's {{placeholders}} from the run")] = None,
    doc_out: Annotated[str | None, typer.Option(help="where the filled template goes (default: TEMPLATE minus .in)")] = None,
    with_runs: Annotated[list[str] | None, typer.Option(
        "--with", help="STUDY=RUN_DIR: a companion study that the template's {{from:STUDY:...}} placeholders read "
                       "(repeatable; default: the folder STUDY beside RUN_DIR)")] = None,
) -> None:
    """Write report.md, report.html and latex/ for a run (complete or partial) and print the summary table."""
    from .report.documents.document import write_document

    from .report.formats.render import FORMATS

    for f in fmt or ():
        if f not in FORMATS:
            _fail(f"--format {f!r}: unknown report format; use {', '.join(FORMATS)}")
    runs = _companion_runs(with_runs)
    if runs and not doc:
        _fail("--with names companion studies for a --doc template; give --doc TEMPLATE too")
    res = _report(run_dir, tuple(fmt or ("md", "html", "latex")), reference)
    if doc:
        target = doc_out or (doc[:-3] if doc.endswith(".in") else doc + ".md")
        console.print(f"document: {escape(str(write_document(run_dir, doc, target, reference, runs, results=res)))}")


@app.command("leaderboard", epilog="Example: editscope leaderboard runs/leaderboard-* --out leaderboard.md")
def leaderboard_cmd(
    run_dirs: Annotated[list[str], typer.Argument(help="run folders of one single-edit study on several models "
                                                       "(editscope run CONFIG --model NAME)")],
    out: Annotated[str | None, typer.Option(help="also write the table as Markdown to this file")] = None,
) -> None:
    """Every editor x model of stored runs: efficacy, generalisation, specificity, portability (teacher-forced
    and generated), fluency, edits made, seconds and peak memory per edit."""
    from .report.analyses.leaderboard import leaderboard_table
    from .report.data.results import load_results
    from .report.formats.render import markdown_table

    studies = [load_results(d) for d in run_dirs]
    table = leaderboard_table(studies)
    rich = Table(*table.header, title=table.caption)
    for row in table.rows:
        rich.add_row(*(escape(text) for text, _ in row))
    console.print(rich)
    if out:
        Path(out).write_text(markdown_table(table) + "\n")
        console.print(f"written: {escape(out)}")


@app.command("trace", epilog='Example: editscope trace --prompt "2+2=" --subject "2+2" --out runs/trace-2plus2')
def trace_cmd(
    prompt: Annotated[str | None, typer.Option(help="the prompt, e.g. 'The Eiffel Tower is located in the city of'")] = None,
    subject: Annotated[str | None, typer.Option(help="the span of the prompt to corrupt (exact substring)")] = None,
    model: ModelOpt = "smollm2-135m",
    dtype: DtypeOpt = "float32",
    target: Annotated[str | None, typer.Option(help="answer to score (its first token; default: the greedy next token)")] = None,
    dataset: Annotated[str | None, typer.Option(help="trace a dataset's edit requests instead (counterfact, zsre, mquake, jsonl)")] = None,
    source: Annotated[str | None, typer.Option(help="the dataset's file (default: its file under ../shared/data)")] = None,
    arithmetic: Annotated[str | None, typer.Option(help="trace 'a op b=' for these operators instead, e.g. '+' or '+-*'")] = None,
    operands: Annotated[int, typer.Option(help="with --arithmetic: operands 0..N-1")] = 10,
    limit: Annotated[int | None, typer.Option(help="with --dataset/--arithmetic: stop after this many traces")] = None,
    offset: Annotated[int, typer.Option(help="with --dataset: first record")] = 0,
    all_facts: Annotated[bool, typer.Option("--all", help="with --dataset: also facts the model does not know "
                                                          "(default: only those whose answer is its top-1, as the paper)")] = False,
    samples: Annotated[int, typer.Option(help="noise samples (seeded)")] = 10,
    noise: Annotated[float, typer.Option(help="noise level, a multiple of the embedding standard deviation")] = 3.0,
    window: Annotated[int, typer.Option(help="blocks restored together for the MLP and attention traces")] = 10,
    kind: Annotated[list[str] | None, typer.Option(help="hidden | mlp | attn (repeatable; default all three)")] = None,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    out: Annotated[str, typer.Option(help="folder for the trace(s) and figures (a dataset trace resumes there); "
                                          "with --doc: the document to write")] = "trace",
    doc: Annotated[str | None, typer.Option(help="fill this write-up template from stored trace studies instead "
                                                 "(placeholders {{aie:SET:...}}, {{traces:SET:...}}; see "
                                                 "editscope.analysis.trace_report) into --out")] = None,
    with_sets: Annotated[list[str] | None, typer.Option(
        "--with", help="with --doc: SET=FOLDER, a trace study the template reads (repeatable; default runs/SET)")] = None,
) -> None:
    """Causal tracing (Meng et al., 2022): corrupt the subject, restore one state at a time, see where the answer comes back.

    One prompt (--prompt, --subject) or many (--dataset counterfact, --arithmetic +): many are stored in
    OUT/traces.jsonl case by case (rerun the command to resume) and summarised as the average indirect effect."""
    from . import load_model
    from .analysis.trace_average import average_indirect_effect
    from .analysis.trace_plots import plot_average, plot_trace
    from .analysis.tracing import KINDS, trace
    from .models.model import resolve_dtype

    many = dataset is not None or arithmetic is not None
    if doc is not None:
        if many or prompt is not None:
            _fail("--doc writes a document from stored traces; leave out --prompt/--dataset/--arithmetic")
        from .analysis.trace_report import referenced_sets, write_trace_document

        if not Path(doc).is_file():
            _fail(f"--doc {doc}: no such template")
        given = _companion_runs(with_sets)
        folders = {name: given.get(name, str(Path("runs") / name)) for name in referenced_sets(Path(doc).read_text())}
        written = write_trace_document(doc, out, folders)
        console.print(f"document: {escape(str(written))} (from {escape(', '.join(f'{k}={v}' for k, v in folders.items()))})")
        return
    if dataset is not None and arithmetic is not None:
        _fail("give --dataset or --arithmetic, not both")
    if not many and (prompt is None or subject is None):
        _fail("give --prompt and --subject (one prompt), or --dataset NAME / --arithmetic OPS (many)")
    if many and (prompt is not None or subject is not None):
        _fail("--prompt/--subject trace one prompt; leave them out with --dataset/--arithmetic")
    if limit is not None:
        _at_least(limit, "--limit", 1)
    _at_least(samples, "--samples", 2)  # an interval over samples needs two
    kinds = tuple(kind or KINDS)
    resolve_dtype(dtype)
    if many:  # the cases are read (and refused) before the model is loaded
        from .analysis.trace_study import arithmetic_cases, dataset_cases, trace_cases

        cases = dataset_cases(dataset, source, offset=offset) if dataset else arithmetic_cases(tuple(arithmetic), range(operands))
        what = f"{dataset} from record {offset}" if dataset else f"'a{arithmetic}b=' for a, b < {operands}"
    with _working(f"loading {model}"):
        m = load_model(model, dtype=dtype)
    folder = Path(out)
    if many:
        with counting_bar() as bar:
            task = bar.add_task("tracing", total=limit or len(cases))
            results = trace_cases(m, cases, folder, limit=limit, known_only=dataset is not None and not all_facts,
                                  samples=samples, noise=noise, window=window, kinds=kinds, seed=seed, description=what,
                                  on_case=lambda done, seen, c, status: bar.update(task, completed=done if limit else seen))
        if not results:
            _fail(f"no case of {what} could be traced (see {folder / 'traces.jsonl'} for the reasons)", code=1)
        effects = [average_indirect_effect(results, k) for k in kinds]
        paths = plot_average(effects, len(results), folder)
        console.print(f"{len(results)} traces in {escape(str(folder))} ({what})")
        for e in effects:
            row = e.categories.index("last subject token")
            peak = int(e.mean[row].argmax())
            console.print(f"  {e.kind:6s} average indirect effect at the last subject token peaks at block {peak}: "
                          f"{e.mean[row][peak]:+.4f} [{e.low[row][peak]:+.4f}, {e.high[row][peak]:+.4f}]")
        console.print(f"figures: {escape(', '.join(str(p) for p in paths))}")
        return
    with _working("tracing"):
        r = trace(m, prompt, target, subject, samples=samples, noise=noise, window=window, kinds=kinds, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trace.json").write_text(r.to_json())
    paths = plot_trace(r, folder)
    for w in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"{escape(repr(prompt))} -> {escape(repr(r.target))}: P clean {r.p_clean:.4f}, corrupted "
                  f"{r.p_corrupt:.4f} (subject tokens {r.subject_range[0]}..{r.subject_range[1] - 1})")
    for k in r.scores:
        ie = r.indirect_effect(k)
        t, layer = divmod(int(ie.argmax()), ie.shape[1])
        console.print(f"  {k:6s} largest indirect effect {ie.max():+.4f} at token {t} ({escape(repr(r.tokens[t]))}), "
                      f"block {layer}")
    console.print(f"figures: {escape(', '.join(str(p) for p in paths))}")


def _companion_runs(with_runs: list[str] | None) -> dict[str, str]:
    runs = {}
    for item in with_runs or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            _fail(f"--with {item!r}: write --with STUDY=RUN_DIR (e.g. --with two-plus-two-controls=runs/two-plus-two-controls)")
        runs[name] = folder
    return runs


@app.command("paper", epilog="Example: editscope paper runs/two-plus-two --template docs/papers/two-plus-two --out paper --pdf")
def paper_cmd(
    run_dir: Annotated[str, typer.Argument(help="run folder written by `editscope run` (or unpacked from an archive)")],
    template: Annotated[str, typer.Option(help="folder with sections/<name>.tex templates (and optional title.tex, "
                                               "appendix/, macros.tex, references.bib, neurips_2025.sty)")],
    out: Annotated[str, typer.Option(help="folder the draft is written to (main.tex, sections/, ...)")] = "paper_draft",
    pdf: Annotated[bool, typer.Option("--pdf", help="also compile: pdflatex, bibtex, pdflatex x2")] = False,
    reference: Annotated[str | None, typer.Option(help="method label the others are tested against")] = None,
    with_runs: Annotated[list[str] | None, typer.Option(
        "--with", help="STUDY=RUN_DIR: a companion study that {{from:STUDY:...}} placeholders read "
                       "(repeatable; default: the folder STUDY beside RUN_DIR)")] = None,
    force: Annotated[bool, typer.Option("--force", help="write into an existing folder editscope did not write")] = False,
) -> None:
    """Write a paper draft (LaTeX, the paper brief's layout) filled from a stored study; --pdf compiles it."""
    from .paper import compile_paper, write_paper

    draft = write_paper(run_dir, template, out, reference=reference, runs=_companion_runs(with_runs), force=force)
    for note in draft.notes:
        console.print(f"[dim]{escape(note)}[/]")
    console.print(f"paper draft: {escape(str(draft.main))}")
    if pdf:
        built = compile_paper(draft.main)
        for kind, items in (("undefined reference", built.undefined_references),
                            ("undefined citation", built.undefined_citations),
                            ("overfull table", built.overfull_tables), ("overfull line", built.overfull_text),
                            ("float taller than the page by", built.too_large_floats)):
            for item in items:
                console.print(f"[yellow]warning:[/] {kind}: {escape(item)}")
        console.print(f"pdf: {escape(str(built.pdf))}")


@app.command(epilog="Example: editscope export runs/two-plus-two two-plus-two.sqlite.xz")
def export(
    run_dir: Annotated[str, typer.Argument(help="run folder written by `editscope run`, or a trace study folder "
                                                "written by `editscope trace --dataset/--arithmetic`")],
    out: Annotated[str, typer.Argument(help="archive to write: NAME.sqlite.xz (a run) or NAME.traces.tar.xz (traces)")],
) -> None:
    """Write a compact xz copy of a run's results store, or of a trace study (to commit next to a write-up)."""
    from .analysis.trace_study import export_traces, is_trace_study
    from .runner import export_archive

    path = export_traces(run_dir, out) if is_trace_study(run_dir) else export_archive(run_dir, out)
    console.print(f"archive: {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command(epilog="Example: editscope unpack two-plus-two.sqlite.xz runs/two-plus-two")
def unpack(
    archive: Annotated[str, typer.Argument(help="NAME.sqlite.xz or NAME.traces.tar.xz written by `editscope export`")],
    run_dir: Annotated[str, typer.Argument(help="empty folder to restore the run (or trace study) into")],
) -> None:
    """Restore an exported results store (or trace study) into a folder: report it, or resume it."""
    from .analysis.trace_study import ARCHIVE_SUFFIX, unpack_traces
    from .runner import unpack_archive

    unpacked = unpack_traces(archive, run_dir) if archive.endswith(ARCHIVE_SUFFIX) else unpack_archive(archive, run_dir)
    console.print(f"folder: {escape(str(unpacked))}")


@app.command(epilog="Example: editscope serve runs/two-plus-two-quick")
def serve(
    runs: Annotated[list[str] | None, typer.Argument(help="run folders (written by `editscope run`) or archives "
                                                           "(*.sqlite.xz) to explore; none: the playground only")] = None,
    port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 8765,
    host: Annotated[str, typer.Option(help="address to bind; anything but loopback asks for a token")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(help="the token to require (default: none on loopback, a random one "
                                                   "otherwise)")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="a model the playground offers, repeatable "
                                                                          "(default: the built-in and built derived models)")] = None,
    playground: Annotated[bool, typer.Option(help="offer the edit playground")] = True,
    save_dir: Annotated[str, typer.Option(help="folder the playground saves edits into")] = "playground-edits",
    dtype: DtypeOpt = "float32",
) -> None:
    """Explore stored runs in the browser (summary, blast radius, probe table, curves) and try edits in a playground."""
    import secrets

    from .explorer import Playground, RunCatalog, check_port, create_app, is_loopback
    from .explorer.server import serve_forever
    from .models.derive import RECIPES, is_built
    from .models.model import resolve_dtype
    from .models.packaged import PACKAGED_MODELS

    resolve_dtype(dtype)
    port = check_port(host, port)  # a busy port is said before minutes of loading
    local = is_loopback(host)
    if not local and token is None:
        token = secrets.token_urlsafe(18)
    catalog = RunCatalog(list(runs or []))
    with _working(f"loading {len(catalog.runs)} run(s)"):
        catalog.load_all()
    models = list(model or [*PACKAGED_MODELS, *(n for n, r in RECIPES.items() if is_built(r))])
    pg = Playground(models, save_dir, dtype=dtype) if playground else None
    app_ = create_app(catalog, pg, token=token, loopback_only=local)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/" + (f"?token={token}" if token else "")
    for rid, run in catalog.runs.items():
        console.print(f"  {rid}: {escape(str(run.source))} ({run.status()})")
    console.print(f"editscope explorer: [bold]{escape(url)}[/bold]  (Ctrl-C stops it)")
    try:
        serve_forever(app_, host, port)
    finally:
        catalog.close()


app.add_typer(data_app, name="data")


def main() -> None:  # pragma: no cover - entry point
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
