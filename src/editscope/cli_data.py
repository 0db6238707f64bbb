"""``editscope data``: the evaluation data registry on the command line (list, fetch, verify, path).

Registered on the main app by :mod:`editscope.cli`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import OneErrorPath, console
from .data.fetch import DataError, cache_dir, data_folders, fetch, install_from, locate, status, verify
from .data.registry import DATASETS

data_app = typer.Typer(cls=OneErrorPath, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       help="Evaluation data: where each dataset comes from, fetching it, checking it.",
                       epilog="Example: editscope data fetch --for examples/two_plus_two_quick.yaml")


def _names(names: list[str] | None, study: str | None) -> list[str]:
    if study is not None:
        from .data.needs import datasets_for
        from .runner import load_config

        got = datasets_for(load_config(study))
        return [*got, *[n for n in names or [] if n not in got]]
    if not names:
        raise DataError("name the datasets to fetch (editscope data list shows them), or --for STUDY.yaml, or --all")
    return [DATASETS[n].name for n in names]  # an unknown name: "did you mean"


@data_app.command("list", epilog="Example: editscope data list")
def list_() -> None:
    """Every dataset of the registry: size, where it is read from now, licence."""
    t = Table(title="evaluation data")
    for col in ("name", "download", "here", "licence", "what"):
        t.add_column(col)
    for ds in DATASETS.values():
        t.add_row(ds.name, f"{ds.download_size / 1e6:.1f} MB", status(ds), ds.licence, ds.description)
    console.print(t)
    where = "; ".join(f"{label}: {folder}" for label, folder in data_folders()) or "no data folder"
    console.print(f"searched: {escape(where)}; cache: {escape(str(cache_dir()))}")


@data_app.command("fetch", epilog="Example: editscope data fetch --for examples/two_plus_two_quick.yaml")
def fetch_(
    names: Annotated[list[str] | None, typer.Argument(help="datasets (editscope data list)")] = None,
    study: Annotated[str | None, typer.Option("--for", help="every dataset a study config reads")] = None,
    every: Annotated[bool, typer.Option("--all", help="every dataset of the registry")] = False,
    source: Annotated[str | None, typer.Option("--from", help="install from this folder instead of downloading "
                                                               "(an offline mirror: the published files)")] = None,
    force: Annotated[bool, typer.Option("--force", help="download again what is cached")] = False,
) -> None:
    """Make datasets available: found in a data folder or the cache, else downloaded and verified."""
    chosen = list(DATASETS) if every else _names(names, study)
    if not chosen:
        console.print("nothing to fetch: the study reads no registry dataset")
    for name in chosen:
        ds = DATASETS[name]
        if source is not None:
            for p in install_from(ds, source):
                console.print(f"{ds.name}: {escape(str(p))} (from {escape(source)}, verified)")
            continue
        for rel, path in fetch(ds, force=force):
            console.print(f"{ds.name}: {escape(rel)} -> {escape(path)}")


@data_app.command("verify", epilog="Example: editscope data verify counterfact")
def verify_(names: Annotated[list[str] | None, typer.Argument(help="datasets (default: every one)")] = None) -> None:
    """Check the files found (data folders, cache) against the registry's SHA-256. A cached file that
    differs is an error (exit 3); a data folder's own differing copy (a subset) is reported."""
    bad_cache = []
    t = Table(title="verify")
    for col in ("file", "state", "where"):
        t.add_column(col)
    for name in names or list(DATASETS):
        for rel, state, detail in verify(DATASETS[name]):
            t.add_row(rel, state, detail)
            if state == "differs" and detail.startswith("cache"):
                bad_cache.append(rel)
    console.print(t)
    if bad_cache:
        raise DataError(f"{len(bad_cache)} cached file(s) differ from the registry ({', '.join(bad_cache)}); fetch them "
                        "again with editscope data fetch NAME --force")


@data_app.command("mirror", epilog="Example: editscope data mirror /srv/editscope-data")
def mirror_(out: Annotated[str, typer.Argument(help="folder to write the sources' layout into")],
            names: Annotated[list[str] | None, typer.Argument(help="datasets (default: every one)")] = None) -> None:
    """Write the published files found here into a folder in the sources' layout: serve it over HTTP
    and point EDITSCOPE_DATA_URL at it on machines without internet."""
    from .data.fetch import write_mirror

    for rel, state in write_mirror(out, [DATASETS[n].name for n in names] if names else None):
        console.print(f"{escape(rel)}: {escape(state)}")


@data_app.command("path", epilog="Example: editscope data path wikitext2")
def path_(name: Annotated[str, typer.Argument(help="a dataset, or a layout path such as wikitext2/wiki.test.raw")],
          fetch_missing: Annotated[bool, typer.Option("--fetch/--no-fetch", help="download when missing")] = False) -> None:
    """Where a dataset's files are read from (each on a line)."""
    rels = [f.path for f in DATASETS[name].files] if "/" not in name else [name]
    for rel in rels:
        console.print(str(locate(rel, download=fetch_missing)), soft_wrap=True)


__all__ = ["data_app"]
