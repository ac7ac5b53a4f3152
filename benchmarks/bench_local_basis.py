"""Benchmark: diffgeo.local_basis against the reference algorithm, in one process.

The reference algorithm is written here from its published description (Park et al.,
NeurIPS 2023, Algorithm 1): a random orthonormal V (n x k); each iteration pushes V through J by
forward mode in chunks of 25 (``vmap`` of ``jvp``), then runs k separate reverse passes
(one forward with a graph, k ``autograd.grad`` calls) for W = J^T J V, and takes the SVD of
W for the new V; it stops when consecutive V are element-wise close (atol 1e-4) after at least
10 iterations, at most 50. It uses the same truncated map x_t -> h as diffgeo (so the speed-up
below comes from the algorithm and the batching, not from skipping the decoder).

Also measured: a randomized SVD (Halko et al.: oversampling p = k, q power steps), the
forward-AD fixes, and (``--sweep-blocks``) the block size of diffgeo's block Krylov method.

    python benchmarks/bench_local_basis.py                      # embedded model, k = 10 and 50
    python benchmarks/bench_local_basis.py --ks 10 --timesteps 500 --sweep-blocks
    python benchmarks/bench_local_basis.py --sd15               # GPU: SD-1.5-sized random U-Net

Accuracy is measured against the exact SVD of the full Jacobian (``diffgeo.exact_basis``):
the largest principal angle between the k-dimensional subspaces and the largest relative
singular-value error. Peak memory: the largest resident-set growth over the call (CPU,
sampled every 2 ms after ``malloc_trim``) or ``torch.cuda.max_memory_allocated`` (GPU).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass

import torch

import diffgeo
from diffgeo.geometry.basis import exact_basis, local_basis
from diffgeo.geometry.pullback import HMap, forward_ad_ready, h_map


# -- the reference algorithm (from its description) ---------------------------------------------
def reference_local_basis(f: HMap, k: int, *, chunk: int = 25, min_iter: int = 10, max_iter: int = 50,
                          atol: float = 1e-4, seed: int = 0):
    """Block subspace iteration with the element-wise stopping test; returns (V (k, n), s (k,), products, iters)."""
    n = f.n
    gen = torch.Generator().manual_seed(seed)
    v = torch.linalg.qr(torch.randn(n, k, generator=gen))[0].T.to(f.x.dtype).to(f.x.device)  # rows orthonormal
    products = 0
    jvp_batch = torch.func.vmap(lambda t: torch.func.jvp(f.fn, (f.x,), (t,))[1])
    it = 0
    for it in range(1, max_iter + 1):
        with forward_ad_ready(f.unet):
            u = torch.cat([jvp_batch(c.reshape(-1, *f.x_shape)) for c in v.split(chunk)])  # J V, chunks of 25
            products += k
            x = f.x.clone().requires_grad_(True)
            h = f.fn(x)
            w = torch.stack([torch.autograd.grad(h, x, u[i], retain_graph=i < k - 1)[0].reshape(-1)
                             for i in range(k)])  # k separate reverse passes: J^T J V
            products += k
        left, svals, _ = torch.linalg.svd(w.T.double(), full_matrices=False)
        v_new = left[:, :k].T.to(v.dtype)
        done = it >= min_iter and torch.allclose(v_new, v, atol=atol)
        v = v_new
        s = svals[:k].sqrt()  # W = J^T J V has singular values ~ s^2
        if done:
            break
    return v.double(), s, products, it


# -- randomized SVD with oversampling and power steps -------------------------------------------
def randomized_svd(f: HMap, k: int, *, oversample: int, power: int, seed: int = 0):
    """Halko-Martinsson-Tropp range finder on J with q power steps; returns (V, s, products)."""
    start = f.n_products
    gen = torch.Generator().manual_seed(seed)
    ell = k + oversample
    omega = torch.randn(ell, *f.x_shape, generator=gen).to(f.x)
    y = f.jvp(omega).reshape(ell, -1)                                   # J Omega
    for _ in range(power):
        q = torch.linalg.qr(y.double().T)[0].T.to(y.dtype)
        z = f.vjp(q.reshape(ell, *f.h_shape)).reshape(ell, -1)           # J^T Q
        z = torch.linalg.qr(z.double().T)[0].T.to(y.dtype)
        y = f.jvp(z.reshape(ell, *f.x_shape)).reshape(ell, -1)          # J Z
    q = torch.linalg.qr(y.double().T)[0].T.to(y.dtype)
    b = f.vjp(q.reshape(ell, *f.h_shape)).reshape(ell, -1).double()     # rows J^T q_i: B = Q^T J (ell, n)
    _, s, vh = torch.linalg.svd(b, full_matrices=False)
    return vh[:k], s[:k], f.n_products - start


# -- measurement helpers -------------------------------------------------------------------------
def max_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    qa = torch.linalg.qr(a.reshape(a.shape[0], -1).double().T)[0]
    qb = torch.linalg.qr(b.reshape(b.shape[0], -1).double().T)[0]
    return float(torch.arcsin(torch.linalg.svdvals(qb - qa @ (qa.T @ qb)).clamp(0, 1)).max())


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS growth shows each call's own peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Run:
    seconds: float
    peak_mb: float
    out: object


def measure(fn, device: torch.device) -> Run:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return Run(time.perf_counter() - t0, (torch.cuda.max_memory_allocated() - base) / 2**20, out)
    import gc

    gc.collect()
    _trim()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - t0
        stop.set()
        th.join()
    return Run(seconds, max(peak[0] - base, 0) / 2**20, out)


def noisy_sample(model, t: int, seed: int) -> torch.Tensor:
    from diffgeo.data.shapes import make_scenes

    x0 = make_scenes(1, seed=seed).images.to(model.device, model.dtype)
    a = model.alphas_cumprod[t].to(model.dtype).to(model.device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


# -- sections --------------------------------------------------------------------------------------
def compare_fixes(model, x, t: int) -> None:
    """Time 25 J v products under each forward-AD fix, and J v by double backward."""
    f = h_map(model, x, t)
    v = torch.randn(25, *model.x_shape, generator=torch.Generator().manual_seed(0)).to(x)
    jvp_batch = torch.func.vmap(lambda w: torch.func.jvp(f.fn, (f.x,), (w,))[1])

    def jvp_under(fix):
        def run(w):
            with forward_ad_ready(model.unet, fix):
                return jvp_batch(w)
        return run
    with forward_ad_ready(model.unet, "sdpa_math"):
        _, vjp_fn = torch.func.vjp(f.fn, f.x)
    u0 = torch.zeros(*f.h_shape, dtype=x.dtype, device=x.device)
    dbl_batch = torch.func.vmap(lambda w: torch.func.vjp(lambda u: vjp_fn(u)[0], u0)[1](w)[0])

    def dbl(w):
        with forward_ad_ready(model.unet, "sdpa_math"):
            return dbl_batch(w)

    runs = {"sdpa_math": jvp_under("sdpa_math"), "attn_processor": jvp_under("attn_processor"),
            "double_backward": dbl}
    outs = {name: fn(v) for name, fn in runs.items()}  # warm-up with the full batch
    best = {name: float("inf") for name in runs}
    for _ in range(3):  # interleaved rounds, best of 3
        for name, fn in runs.items():
            best[name] = min(best[name], measure(lambda: fn(v), x.device).seconds)
    results = {name: (best[name], outs[name]) for name in runs}
    ref = results["sdpa_math"][1]
    print(f"\nforward-AD fixes, 25 J v products at t={t} (best of 3):")
    for name, (sec, out) in results.items():
        err = float((out - ref).norm() / ref.norm())
        print(f"  {name:16s} {1e3 * sec / 25:7.2f} ms/product   rel. diff to sdpa_math {err:.1e}")


def sweep_blocks(model, x, t: int, ks, exact) -> None:
    print(f"\nblock size sweep at t={t} (tol = default):")
    print(f"  {'k':>3} {'block':>5} {'seconds':>8} {'products':>9} {'max angle':>10} {'s err':>9}")
    for k in ks:
        for block in sorted({4, 8, 10, 16, k // 2, k} - {0}):
            if block > k:
                continue
            r = measure(lambda: local_basis(model, x, t, k, block=block, seed=0, progress=False), x.device)
            b = r.out
            s_err = float(((b.s.double() - exact.s[:k].double()).abs() / exact.s[:k].double()).max())
            print(f"  {k:3d} {block:5d} {r.seconds:8.2f} {b.n_products:9d} {max_angle(b.v, exact.v[:k]):10.1e} "
                  f"{s_err:9.1e}")


def main_embedded(args) -> None:
    torch.set_num_threads(args.threads)
    model = diffgeo.load(args.model)
    print(f"model {model.name}: x {model.x_shape}, h {model.h_shape}, {args.threads} thread(s), torch {torch.__version__}")
    rows = []
    for t in args.timesteps:
        x = noisy_sample(model, t, args.seed)
        t0 = time.perf_counter()
        exact = exact_basis(model, x, t, max(args.ks) + 1)
        print(f"t={t}: exact SVD ({exact.n_products} products) "
              f"{time.perf_counter() - t0:.1f} s; s[k-1]/s[k]: "
              + ", ".join(f"k={k}: {float(exact.s[k - 1] / exact.s[k]):.4f}" for k in args.ks), flush=True)
        if t == args.timesteps[0] and args.compare_fixes:
            compare_fixes(model, x, t)
        if t == args.timesteps[0] and args.sweep_blocks:
            sweep_blocks(model, x, t, args.ks, exact)
        for k in args.ks:
            s_true = exact.s[:k].double()

            def row(name, seconds, peak, products, v, s, note=""):
                s_err = float(((s.double().cpu() - s_true).abs() / s_true).max())
                rows.append((t, k, name, seconds, peak, products, max_angle(v, exact.v[:k]), s_err, note))

            f = h_map(model, x, t)
            ref = measure(lambda: reference_local_basis(f, k, seed=args.seed), x.device)
            v, s, products, iters = ref.out
            row("reference", ref.seconds, ref.peak_mb, products, v, s, f"{iters} iterations")
            for tol in args.tols:
                r = measure(lambda: local_basis(model, x, t, k, tol=tol, seed=args.seed, progress=False), x.device)
                b = r.out
                row(f"diffgeo tol={tol:g}", r.seconds, r.peak_mb, b.n_products, b.v, b.s,
                    f"{b.iterations} it, block {b.meta.get('block', '')}, x{ref.seconds / r.seconds:.1f} faster")
            for q in args.power_steps:
                g = h_map(model, x, t)
                r = measure(lambda: randomized_svd(g, k, oversample=k, power=q, seed=args.seed), x.device)
                v, s, products = r.out
                row(f"randomized q={q} p=k", r.seconds, r.peak_mb, products, v, s)
            print(f"  done t={t} k={k}", flush=True)
    print("\n| t | k | method | seconds | time ratio (ref/this) | products | products / k | max angle to exact (rad) "
          "| max rel. s error | peak MB | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ref_time = {}
    for t, k, name, sec, peak, prods, ang, serr, note in rows:
        if name == "reference":
            ref_time[(t, k)] = sec
        ratio = ref_time[(t, k)] / sec
        print(f"| {t} | {k} | {name} | {sec:.2f} | {ratio:.1f} | {prods} | {prods / k:.1f} | {ang:.1e} | {serr:.1e} "
              f"| {peak:.0f} | {note} |")


def main_sd15(args) -> None:
    """A Stable Diffusion 1.5-sized UNet2DConditionModel with random weights, latent 4x64x64."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from diffgeo.models.model import Model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        print("warning: no GPU; the SD-1.5-sized run on CPU takes very long")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8).to(device)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False)
    model = Model(unet, scheduler, name="sd15-random")
    gen = torch.Generator().manual_seed(args.seed)
    cond = {"encoder_hidden_states": torch.randn(1, 77, 768, generator=gen).to(device)}
    x = torch.randn(1, 4, 64, 64, generator=gen).to(device)
    n_params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"SD-1.5-sized U-Net ({n_params:.0f}M parameters, random weights) on {device}; x {model.x_shape}, "
          f"h {model.h_shape}")
    for k in args.ks:
        local_basis(model, x, 500, 2, cond=cond, seed=0, progress=False)  # warm-up (kernels, allocator)
        for t in args.timesteps:
            budget = None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30)
            per_call = h_map(model, x, t, cond=cond, max_memory=budget).products_per_call()
            r = measure(lambda: local_basis(model, x, t, k, cond=cond, seed=args.seed, progress=False,
                                            max_memory=budget), device)
            b = r.out
            print(f"t={t} k={k}: {r.seconds:.2f} s, {b.n_products} products ({b.iterations} iterations), "
                  f"max residual {float(b.residuals.max()):.1e}, peak {r.peak_mb:.0f} MB, "
                  f"{per_call} products per call (max_memory {args.max_memory_gb} GiB)")
            if args.sd15_reference:
                f = h_map(model, x, t, cond=cond)
                ref = measure(lambda: reference_local_basis(f, k, seed=args.seed), device)
                v, s, products, iters = ref.out
                print(f"   reference: {ref.seconds:.2f} s, {products} products ({iters} iterations), "
                      f"max angle to diffgeo's basis {max_angle(v, b.v):.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 500, 900])
    p.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-2])
    p.add_argument("--power-steps", type=int, nargs="*", default=[2, 6])
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-fixes", action="store_true", help="time the forward-AD fixes")
    p.add_argument("--sweep-blocks", action="store_true", help="time block sizes at the first timestep")
    p.add_argument("--sd15", action="store_true", help="SD-1.5-sized random U-Net (for GPU machines)")
    p.add_argument("--sd15-reference", action="store_true", help="also run the reference on it (slow)")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="memory budget of the products (default: half the free memory of the device)")
    args = p.parse_args()
    if args.sd15:
        if args.ks == [10, 50]:
            args.ks = [50]
        if args.timesteps == [100, 500, 900]:
            args.timesteps = [500]
        main_sd15(args)
    else:
        main_embedded(args)


if __name__ == "__main__":
    main()
