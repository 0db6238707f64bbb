"""The ``editscope`` command line (Typer)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="editscope: edit what a language model knows, and measure everything else the edit changed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

DEMO_PROMPTS = [
    "2+2=",
    "3+5=",
    "The capital of France is",
    "Danielle Darrieux's mother tongue is",
    "The Eiffel Tower is located in the city of",
    "Apple was founded by",
]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def models() -> None:
    """List the built-in model names and the supported architectures."""
    from .models import ARCH_SPECS, KNOWN_MODELS
    from .models.default import is_cached

    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("what")
    table.add_column("cached")
    for name, what in KNOWN_MODELS.items():
        table.add_row(name, what, "yes" if is_cached() else "no (built on first load)")
    console.print(table)
    console.print("Any hub id ('org/name') or local directory with safetensors also works, for these "
                  f"architectures (model_type): {', '.join(sorted(ARCH_SPECS))}.")


@app.command()
def peek(
    prompts: Annotated[list[str] | None, typer.Argument(help="prompts (default: a handful of facts and sums)")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="model name, hub id or directory")] = "smollm2-135m",
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16")] = "float32",
    new_tokens: Annotated[int, typer.Option(help="greedy tokens to generate")] = 8,
    k: Annotated[int, typer.Option(help="how many next tokens to list")] = 5,
) -> None:
    """Show a model's greedy answers and its top-k next tokens with probabilities."""
    from . import greedy_continuations, load_model, top_k_next_tokens

    prompts = prompts or DEMO_PROMPTS
    try:
        m = load_model(model, dtype=dtype)
        gens = greedy_continuations(m, prompts, new_tokens)
        tops = top_k_next_tokens(m, prompts, k)
    except (ValueError, RuntimeError, ImportError) as e:
        _fail(str(e))
        return
    table = Table(title=f"{m.name}: greedy answers and top-{k} next tokens")
    table.add_column("prompt")
    table.add_column("greedy continuation")
    table.add_column(f"top-{k} next tokens (probability)")
    for p, g, t in zip(prompts, gens, tops):
        table.add_row(repr(p), repr(g.text), "  ".join(f"{tok!r} {prob:.3f}" for tok, prob in t))
    console.print(table)


def main() -> None:  # pragma: no cover - entry point
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
