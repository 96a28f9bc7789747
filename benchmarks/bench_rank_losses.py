"""Time and peak memory of our O(B^2) rank losses vs a straightforward B x B x B implementation, same run.

For each batch size B (m-per-class labels, m=4, d=512) and each loss (SupAP, Smooth-AP) it times forward+backward,
in interleaved rounds so that load on a shared machine hits all alike, of (a) a B^3 implementation that builds
D[q, i, j] = s_qj - s_qi like the original ``quick_forward``, (b) ours (``roadmap.losses``, all positive pairs at
once) and (c) ours chunked. It checks that the values agree within 1e-6
and prints the fastest time and the peak memory of each, with the ratios ours / B^3.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process high-water mark (VmHWM, reset
through /proc/self/clear_refs) above the resident size before the call. On CPU the script re-executes itself with
``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0`` so that glibc maps every large tensor freshly and returns
it on free; otherwise memory cached by the allocator hides allocations from the resident size.

    python benchmarks/bench_rank_losses.py                       # B = 128, 256, 384 on CPU
    python benchmarks/bench_rank_losses.py --device cuda --sizes 128 256 384 512
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from common.ranking import SupAPStep, heaviside, sigmoid_step
from roadmap.losses import SmoothAP, SupAP


# ------------------------------------------------------------------ the B^3 formulation (original quick path)
def ap_loss_b3(emb: torch.Tensor, labels: torch.Tensor, neg_step: Callable, pos_step: Callable) -> torch.Tensor:
    """1 - mAP with the query included, via the full [B, B, B] difference tensor (like ``quick_forward``)."""
    e = F.normalize(emb, dim=1)
    s = e @ e.T  # [B, B]
    B = s.shape[0]
    target = (labels[:, None] == labels[None, :]).to(s.dtype)  # [B, B], diagonal included
    not_self = 1.0 - torch.eye(B, dtype=s.dtype, device=s.device)  # j != i
    diff = s[:, None, :] - s[:, :, None]  # [q, i, j] = s_qj - s_qi
    pos_j = target[:, None, :].expand(B, B, B).bool()  # j positive for q
    steps = torch.where(pos_j, pos_step(diff), neg_step(diff)) * not_self  # [B, B, B]
    rank = 1.0 + steps.sum(-1)  # [q, i]
    rank_pos = 1.0 + (pos_step(diff) * target[:, None, :] * not_self).sum(-1)
    ap = (rank_pos / rank * target).sum(1) / target.sum(1)
    return 1.0 - ap.mean()


def supap_b3(emb, labels):
    return ap_loss_b3(emb, labels, SupAPStep(offset=1.44), heaviside)


def smoothap_b3(emb, labels):
    step = lambda x: sigmoid_step(x, 0.01)
    return ap_loss_b3(emb, labels, step, step)


# ------------------------------------------------------------------ measurement
def _kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def run_once(fn: Callable, emb: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """One forward+backward: (loss value, seconds, peak MiB above the memory in use before the call)."""
    device = emb.device
    x = emb.clone().requires_grad_(True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        open("/proc/self/clear_refs", "w").write("5")
        base = _kib("VmRSS") * 1024
    t0 = time.perf_counter()
    loss = fn(x, labels)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _kib("VmHWM") * 1024
    return loss.item(), dt, (peak - base) / 2**20


def measure_interleaved(fns: list[Callable], emb, labels, repeats: int) -> list[tuple[float, float, float]]:
    """Run the implementations in turn, ``repeats`` rounds after one warm-up round, so that load changes on a shared
    machine hit all of them alike. Returns per implementation (value, fastest seconds, max peak MiB): the minimum
    over rounds is the least load-disturbed estimate (as ``timeit`` recommends)."""
    times: list[list[float]] = [[] for _ in fns]
    peaks = [0.0 for _ in fns]
    values = [float("nan") for _ in fns]
    for r in range(repeats + 1):
        for k, fn in enumerate(fns):
            v, dt, mem = run_once(fn, emb, labels)
            values[k] = v
            if r > 0:
                times[k].append(dt)
                peaks[k] = max(peaks[k], mem)
    return [(values[k], min(times[k]), peaks[k]) for k in range(len(fns))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--m", type=int, default=4, help="images per class in the batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=256, help="(query, positive) pairs per chunk for the chunked path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.device == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    losses = {
        "SupAP": (supap_b3, SupAP(), SupAP(chunk_size=args.chunk)),
        "SmoothAP": (smoothap_b3, SmoothAP(), SmoothAP(chunk_size=args.chunk)),
    }
    print(f"device={device} threads={args.threads} d={args.dim} m={args.m} repeats={args.repeats} chunk={args.chunk}")
    header = (
        f"{'loss':9s} {'B':>4s} {'B3 s':>8s} {'ours s':>8s} {'chunk s':>8s} {'B3 MiB':>9s} {'ours MiB':>9s} "
        f"{'chunk MiB':>9s} {'t ours/B3':>9s} {'t chunk/B3':>10s} {'m ours/B3':>9s} {'m chunk/B3':>10s} {'|dv|':>8s}"
    )
    print(header)
    for name, (b3, ours, chunked) in losses.items():
        for B in args.sizes:
            g = torch.Generator().manual_seed(B)
            emb = torch.randn(B, args.dim, generator=g).to(device)
            labels = torch.arange(B // args.m).repeat_interleave(args.m).to(device)
            (v3, t3, m3), (vo, to, mo), (vc, tc, mc) = measure_interleaved(
                [b3, ours, chunked], emb, labels, args.repeats
            )
            dv = max(abs(vo - v3), abs(vc - v3))
            print(
                f"{name:9s} {B:4d} {t3:8.4f} {to:8.4f} {tc:8.4f} {m3:9.1f} {mo:9.1f} {mc:9.1f} "
                f"{to / t3:9.3f} {tc / t3:10.3f} {mo / max(m3, 1e-9):9.4f} {mc / max(m3, 1e-9):10.4f} {dv:8.1e}"
            )
            if dv > 1e-6:
                raise SystemExit(f"value mismatch for {name} at B={B}: {dv:.2e} > 1e-6")


if __name__ == "__main__":
    main()
