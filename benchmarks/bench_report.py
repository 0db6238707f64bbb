"""Report time of a stored run with this checkout's code against an earlier revision's, in one run.

    python benchmarks/bench_report.py runs/two-plus-two --before a3bdb4e

Each side loads the run and writes its Markdown report (figures included) in a fresh subprocess
(the earlier revision from a temporary `git worktree`, on PYTHONPATH); the two report.md files must
be identical, so the speed-up changes no number. The run is read in place (the reports go to
temporary folders that link its files). A format-1 store is read by both sides as it is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMER = """
import sys, time
from pathlib import Path
from editscope.report import load_results, write_report
out = Path(sys.argv[1])
t = time.perf_counter()
res = load_results(out)
t1 = time.perf_counter()
write_report(out, formats=("md",), results=res)
print(f"{t1 - t:.3f} {time.perf_counter() - t:.3f}")
"""


def timed_report(run: Path, out: Path, src: Path) -> tuple[float, float]:
    """(load s, load + report s) of ``run`` with the package under ``src``."""
    out.mkdir()
    for f in ("study.json", "results.sqlite"):
        (out / f).symlink_to(run.resolve() / f)
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", TIMER, str(out)], env=env, capture_output=True, text=True, check=True)
    load, total = map(float, done.stdout.split()[-2:])
    return load, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder (study.json + results.sqlite)")
    ap.add_argument("--before", required=True, help="the git revision to compare with (e.g. a commit)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tree = Path(d) / "before-tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before],
                       check=True, capture_output=True)
        try:
            before = timed_report(args.run, Path(d) / "before", tree / "src")
            after = timed_report(args.run, Path(d) / "after", ROOT / "src")
            same = (Path(d) / "before" / "report.md").read_text() == (Path(d) / "after" / "report.md").read_text()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"{'':16}{args.before:>12}{'this':>12}{'ratio':>8}")
    print(f"{'load s':16}{before[0]:12.1f}{after[0]:12.1f}{before[0] / after[0]:8.2f}")
    print(f"{'load+report s':16}{before[1]:12.1f}{after[1]:12.1f}{before[1] / after[1]:8.2f}")
    print(f"report.md identical: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
