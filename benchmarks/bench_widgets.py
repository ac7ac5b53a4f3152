"""Latency of a strength-slider move in the traversal dashboard (notebook 05) on the embedded
``shapes`` model, and the torch thread setting it should run with.

    python benchmarks/bench_widgets.py                 # 1 and 2 threads, alone and next to a busy process
    python benchmarks/bench_widgets.py --moves 15 --n 2 --steps 10

A move sets ``dash.controls["strength"].value`` exactly as the browser does (the kernel side of
it; the browser's own drawing is not timed). Each move goes to a strength not seen before, so
nothing comes from the cache. Two numbers per move: **preview** (until the first figure changed:
the x0 the model predicts right after the edit, one forward pass, drawn) and **full** (until the
denoised result is drawn). The "busy neighbour" is a second process running the same U-Net in a
loop with one thread, as a second kernel or a sweep would. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time


def _busy(stop: "mp.synchronize.Event") -> None:
    import torch

    import diffgeo

    torch.set_num_threads(1)
    model = diffgeo.load("shapes")
    x = torch.randn(4, *model.x_shape)
    with torch.no_grad():
        while not stop.is_set():
            model.eps(x, 500)


def measure(dash, threads: int, strengths: list[float]) -> tuple[list[float], list[float]]:
    """Move the strength slider to each value (never seen before) with ``threads`` torch threads;
    milliseconds to the first frame (preview) and to the last (full result)."""
    dash.threads = threads
    first, full = [], []
    for s in strengths:
        dash.controls["strength"].value = s
        if not dash.last_ok:
            raise RuntimeError(dash.status.value)
        first.append(dash.first_frame_seconds * 1000)
        full.append(dash.last_seconds * 1000)
    return first, full


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--moves", type=int, default=7)
    p.add_argument("--n", type=int, default=2, help="images edited at once")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--neighbour", choices=["both", "none", "busy"], default="both")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch {torch.__version__}")
    from diffgeo.widgets import traversal_dashboard

    dash = traversal_dashboard(n=args.n, steps=args.steps, k=args.k, direction="local basis v1")  # cached
    dash.controls["strength"].value = 0.05  # warm-up move (strength in units of ||x_t||: the slider spans +-1)
    values = iter([(-1) ** i * (0.1 + 0.0005 * i) for i in range(1_800)])
    print("\n| neighbour | threads | preview median (ms) | full median (ms) | full min-max (ms) |")
    print("|---|---|---|---|---|")
    for neighbour in (["none", "busy"] if args.neighbour == "both" else [args.neighbour]):
        stop = proc = None
        if neighbour == "busy":
            stop = mp.get_context("spawn").Event()
            proc = mp.get_context("spawn").Process(target=_busy, args=(stop,), daemon=True)
            proc.start()
            time.sleep(10)  # its import and first passes
        try:
            for threads in args.threads:
                first, full = measure(dash, threads, [next(values) for _ in range(args.moves)])
                print(f"| {neighbour} | {threads} | {statistics.median(first):.0f} | {statistics.median(full):.0f} "
                      f"| {min(full):.0f}-{max(full):.0f} |", flush=True)
        finally:
            if proc is not None:
                stop.set()
                proc.join(10)
    print(f"\n{args.moves} moves each; n={args.n} images, {args.steps} DDIM steps, k={args.k}; full = preview + "
          f"x-space edit + Asyrp run + both figures; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
