"""The lean store (format 2) against the first format on a real run: file size (vacuumed, and as
the committed .xz archive) and the time to load the run and write its Markdown report.

    python benchmarks/bench_store.py runs/two-plus-two          # the full flagship run

Both stores hold the same rows (checked); the ratios come from one run of this script.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from editscope.report import load_results, write_report
from editscope.runner.store import FILENAME, ResultsStore, convert_store, export_archive


def vacuumed_size(path: Path) -> int:
    con = sqlite3.connect(path)
    con.execute("VACUUM")
    con.close()
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder whose results.sqlite is in the first format")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        v1, v2 = Path(d) / "v1", Path(d) / "v2"
        v1.mkdir()
        v2.mkdir()
        shutil.copy(Path(args.run) / "study.json", v1)
        shutil.copy(Path(args.run) / "study.json", v2)
        src = ResultsStore(Path(args.run) / FILENAME)
        src.db.backup(sqlite3.connect(v1 / FILENAME))
        src.close()
        t = time.perf_counter()
        convert_store(v1 / FILENAME, v2 / FILENAME)
        print(f"converted in {time.perf_counter() - t:.1f} s")
        a, b = ResultsStore(v1 / FILENAME), ResultsStore(v2 / FILENAME)
        assert a.format == "editscope-results-1" and b.format == "editscope-results-2"
        n = a.counts()["rows"]
        assert n == b.counts()["rows"]
        a.close()
        b.close()
        sizes = {k: vacuumed_size(p / FILENAME) for k, p in (("v1", v1), ("v2", v2))}
        xz = {k: export_archive(p, Path(d) / f"{k}.sqlite.xz").stat().st_size for k, p in (("v1", v1), ("v2", v2))}
        times = {}
        for k, p in (("v1", v1), ("v2", v2)):
            t = time.perf_counter()
            res = load_results(p)
            load = time.perf_counter() - t
            write_report(p, formats=("md",), results=res)
            times[k] = (load, time.perf_counter() - t)
        print(f"{n} rows")
        print(f"{'':10}{'format 1':>14}{'format 2':>14}{'ratio':>8}")
        print(f"{'store MB':10}{sizes['v1'] / 1e6:14.1f}{sizes['v2'] / 1e6:14.1f}{sizes['v1'] / sizes['v2']:8.2f}")
        print(f"{'.xz MB':10}{xz['v1'] / 1e6:14.2f}{xz['v2'] / 1e6:14.2f}{xz['v1'] / xz['v2']:8.2f}")
        print(f"{'load s':10}{times['v1'][0]:14.1f}{times['v2'][0]:14.1f}{times['v1'][0] / times['v2'][0]:8.2f}")
        print(f"{'report s':10}{times['v1'][1]:14.1f}{times['v2'][1]:14.1f}{times['v1'][1] / times['v2'][1]:8.2f}")


if __name__ == "__main__":
    main()
