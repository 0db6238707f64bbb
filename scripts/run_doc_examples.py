"""Run every example of the README and the tutorials on the real model, slow ones included
(``make docs-examples``): each page's ``python`` and ``python slow`` blocks in order in one namespace,
its ``sh`` and ``sh slow`` blocks with bash, in a scratch folder under ``runs/doc-examples/``
(or ``--out``). ``tests/unit/test_doc_examples.py`` runs the ``python`` blocks alone, on a tiny model.

    .venv/bin/python scripts/run_doc_examples.py [PAGE ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "tutorials").glob("*.md"))]
#: fences whose blocks are run, and by what
RUN = {"python": "python", "python slow": "python", "sh": "sh", "sh slow": "sh"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(fence info, code)`` of every fenced block of ``page``, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(page.read_text())]


def run_page(page: Path, out: Path) -> None:
    work = out / page.stem
    work.mkdir(parents=True, exist_ok=True)
    namespace = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for info, code in blocks(page):
            kind = RUN.get(info)
            if kind == "python":
                exec(compile(code, str(page), "exec"), namespace)
            elif kind == "sh":
                # make targets run in the checkout; editscope commands in the scratch folder
                where = ROOT if code.lstrip().startswith("make ") else work
                env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
                subprocess.run(["bash", "-e", "-u", "-c", code], cwd=where, env=env, check=True)
    finally:
        os.chdir(cwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", help="pages to run (default: the README and every tutorial)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "doc-examples"))
    args = ap.parse_args()
    pages = [Path(p).resolve() for p in args.pages] or PAGES
    for page in pages:
        t0 = time.perf_counter()
        run_page(page, Path(args.out).resolve())
        print(f"{page.relative_to(ROOT)}: every example ran ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
