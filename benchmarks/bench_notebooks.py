"""Time to interactive of each notebook, cell by cell, under nbclient (the kernel side of what
Voila does when a page is opened; the browser's own drawing is not timed).

    OMP_NUM_THREADS=1 python benchmarks/bench_notebooks.py                  # real mode, all six
    OMP_NUM_THREADS=1 python benchmarks/bench_notebooks.py 04 05 --fast     # fast mode, two of them
    OMP_NUM_THREADS=1 python benchmarks/bench_notebooks.py --cache DIR      # a given disk cache

Time to interactive is measured from the kernel's start (what opening a page starts) to the end
of the cell that displays the notebook's first dashboard (the tour, which has none: its first
figure). Each notebook runs in a fresh kernel with ``DIFFGEO_CACHE`` set to the cache folder
(default: a new empty one, so the first pass is *cold*); ``--warm`` runs every notebook a second
time against the same folder (what a class sees after a teacher's earlier session). Prints the
load average with each notebook and a Markdown table of seconds per cell.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_interactive(nb) -> int:
    """Index of the cell after which the notebook is interactive: the first that builds a
    dashboard, else the first that draws."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for i in code:
        if "_dashboard(" in nb.cells[i].source:
            return i
    return next(i for i in code if "plt.show()" in nb.cells[i].source)


def run(path: Path, *, fast: bool, cache: str) -> tuple[float, float, list[tuple[str, float]]]:
    """Seconds (from the kernel's start) to interactive and to the end of the last cell, and (first line, seconds) per code cell."""
    import jupytext
    from nbclient import NotebookClient

    os.environ["DIFFGEO_CACHE"] = cache
    os.environ.pop("DIFFGEO_FAST", None)
    if fast:
        os.environ["DIFFGEO_FAST"] = "1"
    nb = jupytext.read(path)
    target = first_interactive(nb)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    cells: list[tuple[str, float]] = []
    marks: dict[int, float] = {}
    start = time.perf_counter()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            client.execute_cell(cell, i)
            marks[i] = time.perf_counter() - start
            errors = [o for o in cell.outputs if o.output_type == "error"]
            if errors:
                raise RuntimeError(f"{path.name} cell {i}: {errors[0].ename}: {errors[0].evalue}")
            cells.append((cell.source.strip().splitlines()[0][:60], time.perf_counter() - t0))
    return marks[target], marks[max(marks)], cells


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="notebook prefixes (e.g. 04); default all")
    p.add_argument("--fast", action="store_true", help="DIFFGEO_FAST=1")
    p.add_argument("--warm", action="store_true", help="a second pass against the same cache folder")
    p.add_argument("--cache", default=None, help="cache folder (default: a new empty one)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = args.cache or tempfile.mkdtemp(prefix="diffgeo-tti-")
    paths = sorted((ROOT / "notebooks").glob("*.py"))
    if args.names:
        paths = [q for q in paths if any(q.name.startswith(n) for n in args.names)]
    rows = []
    for label in ["cold", "warm"] if args.warm else ["cold" if args.cache is None else "given cache"]:
        for path in paths:
            load = os.getloadavg()[0]
            tti, total, cells = run(path, fast=args.fast, cache=cache)
            rows.append((path.stem, label, tti, total, load))
            print(f"{path.stem} ({label}, load {load:.2f}): interactive after {tti:.1f} s, all cells {total:.1f} s")
            for first, s in cells:
                print(f"    {s:7.2f} s  {first}")
    print(f"\ncache: {cache}; mode: {'fast' if args.fast else 'real'}; {os.cpu_count()} cores\n")
    print("| notebook | cache | interactive (s) | all cells (s) | load average (1 min) |")
    print("|---|---|---|---|---|")
    for name, label, tti, total, load in rows:
        print(f"| {name} | {label} | {tti:.1f} | {total:.1f} | {load:.2f} |")


if __name__ == "__main__":
    main()
