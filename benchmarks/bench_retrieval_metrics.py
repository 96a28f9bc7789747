"""Retrieval metrics: ours (common.metrics.retrieval) vs pytorch-metric-learning's AccuracyCalculator, same data.

Data: an SOP-like synthetic set (fixed seed): N items in classes of 2 to 12 images, 12 super-categories, d = 512;
embeddings = category direction + class direction + item noise (cosine: same class ~0.3, same category ~0.1).

PML: ``AccuracyCalculator(include=(precision_at_1, r_precision, mean_average_precision_at_r), k="max_bin_count")``
with its default faiss-cpu kNN (``IndexFlatL2``), exactly as ROADMAP evaluates. Ours: ``evaluate_retrieval`` with
the same three metrics (full ranking, exact float64 ranking through the candidate pass, all-vs-all: half the
matmul), and, at the largest N, the full-ranking ``map``, ``ndcg``, ``hap``, ``asi`` on the [class, category]
labels (dense float32 scores, count engine).

Bare matmuls: the tiles that our candidate pass scores, with nothing else, in the precision it chose and in float32;
they say how close the pass is to the machine's compute limit (ours = X x the bare matmul).

Each measurement runs in a fresh process (spawned, data regenerated from the seed) after imports and one warm-up
call on 256 items (so faiss' and oneDNN's first-call set-up and our once-per-process precision probe, reported
separately, are not counted); it reports the best of ``--reps`` calls (1 at N >= 20,000) and the peak RSS.

Tie caveat: PML orders tied neighbours as faiss returns them, we order them pessimistically; the synthetic data
has no exact ties, but PML ranks by float32 L2 distances (||q||^2 + ||x||^2 - 2 q.x, rounding ~1e-7) and we by
exact (float64) cosines, so a positive and a negative closer than float32 resolution may be swapped in a query.
Values must agree to 1e-6, or to 2/N (one or two such queries) with a printed note.

Usage::

    python benchmarks/bench_retrieval_metrics.py                      # make bench-metrics: N = 2k, 5k, 20k, 60,502
    python benchmarks/bench_retrieval_metrics.py --n 2000 5000        # make bench-metrics-small
    python benchmarks/bench_retrieval_metrics.py --graded-only --hierarchy inat --n 136093

An AVX2-only CPU can be emulated on an AVX-512 one with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``
(torch's bf16/fp16 matmuls lose their native kernels) plus ``MKL_ENABLE_INSTRUCTIONS=AVX2
OPENBLAS_CORETYPE=Haswell`` (float32 BLAS in torch, numpy and faiss too). Compare the ratios printed by one run,
not times across runs. The closing lines are ``ratio_vs_pml[N=...]=<ours / PML>`` per N, then
``ratio_vs_pml=<the largest N's>``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}
OURS_METRICS = ("precision_at_1", "r_precision", "map_at_r")
FULL_METRICS = ("map", "ndcg", "hap", "asi")
EMULATION_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx512_fp16")


def make_sop_like(n: int, dim: int = 512, seed: int = 0, n_categories: int = 12):
    """``(embeddings float32 [n, dim], labels int64 [n, 2] = [class, category])`` with 2..12 items per class."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(torch.randint(2, 13, (1,), generator=gen)))
    sizes[-1] -= sum(sizes) - n
    if sizes[-1] < 2:  # keep every class at >= 2 items
        last = sizes.pop()
        sizes[-1] += last
    n_classes = len(sizes)
    cls = torch.repeat_interleave(torch.arange(n_classes), torch.tensor(sizes))
    cat_of_class = torch.randint(0, n_categories, (n_classes,), generator=gen)
    scale = dim**-0.5
    cat_dir = torch.randn(n_categories, dim, generator=gen) * scale
    cls_dir = torch.randn(n_classes, dim, generator=gen) * scale
    noise = torch.randn(n, dim, generator=gen) * scale
    x = 0.45 * cat_dir[cat_of_class[cls]] + 0.75 * cls_dir[cls] + 1.6 * noise
    perm = torch.randperm(n, generator=gen)
    labels = torch.stack([cls, cat_of_class[cls]], 1)[perm]
    return torch.nn.functional.normalize(x[perm], dim=1).float().contiguous(), labels


def make_inat_like(n: int, dim: int = 512, seed: int = 0, n_levels: int = 7):
    """``(embeddings float32 [n, dim], labels int64 [n, 7])``: an iNat-2018-like tree (column 0 = species, column 6 =
    kingdom). Branching 6 kingdoms (skewed sizes), then 2-6 children per node down to about n / 17 species; every
    item is one image of a species. Embeddings sum one direction per level (finer levels weigh more) plus noise."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_species = max(1, n // 17)
    # nodes level by level, coarse to fine: the parent of each node, with 6 kingdoms of very different sizes
    parents = [torch.zeros(6, dtype=torch.long)]
    weights = torch.tensor([0.45, 0.35, 0.1, 0.05, 0.03, 0.02], dtype=torch.float64)
    count = 6
    for depth in range(1, n_levels):
        target = int(round(6 * (n_species / 6) ** (depth / (n_levels - 1))))
        parent = torch.multinomial(weights, max(target, count), replacement=True, generator=gen)
        parent[:count] = torch.arange(count)  # every node keeps at least one child
        parents.append(parent)
        n_children = torch.bincount(parent, minlength=count).double()
        weights = weights[parent] / n_children[parent] * torch.rand(parent.numel(), generator=gen).add(0.5)
        weights /= weights.sum()
        count = parent.numel()
    species = torch.multinomial(weights, n, replacement=True, generator=gen)
    cols = [species]
    for parent in parents[:0:-1]:
        cols.append(parent[cols[-1]])
    labels = torch.stack(cols, 1)  # [n, L], column 0 finest
    x = 1.6 * torch.randn(n, dim, generator=gen)
    for level in range(n_levels):
        ids = labels[:, level]
        direction = torch.randn(int(ids.max()) + 1, dim, generator=gen)
        x += (0.9 - 0.1 * level) * direction[ids]
    return torch.nn.functional.normalize(x, dim=1).float().contiguous(), labels


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _best_of(fn, reps: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _bare_matmuls(x, precision_name: str, reps: int) -> dict[str, float]:
    """Seconds of the candidate pass's tiles (all-vs-all plan) with nothing else, in its precision and in fp32."""
    import torch

    from common.metrics.retrieval_candidates import tile_plan
    from common.metrics.retrieval_precision import lp_matmul, precision_by_name

    plan = tile_plan(x.shape[0], x.shape[0], True)
    side = max(r1 - r0 for _, (r0, r1), _, _ in plan)
    out = {}
    for name in dict.fromkeys((precision_name, "fp32")):
        p = precision_by_name(name, x.device)
        xl = p.round_inputs(x)
        buf = torch.empty(side * side, dtype=p.dtype)

        def run(xl=xl, p=p, buf=buf) -> None:
            for _, (q0, q1), _, (c0, c1) in plan:
                lp_matmul(p, xl[q0:q1], xl[c0:c1], out=buf[: (q1 - q0) * (c1 - c0)].view(q1 - q0, c1 - c0))

        run_small = lp_matmul(p, xl[:256], xl[:256])  # warm-up
        del run_small
        out[name] = _best_of(run, reps)[0]
    return out


def _full_matmul_fp32(x, reps: int) -> float:
    """Seconds of the count engine's dense float32 scores (all N x N, its chunks), nothing else."""
    import torch

    from common.metrics.retrieval_count import CountEngine
    from common.metrics.retrieval_precision import exact_matmul_mode

    n = x.shape[0]
    step = max(1, CountEngine.elems_per_chunk // n)
    buf = torch.empty(step, n)

    def run() -> None:
        with exact_matmul_mode():
            for s in range(0, n, step):
                q = x[s : s + step]
                torch.mm(q, x.T, out=buf[: q.shape[0]])

    return _best_of(run, reps)[0]


def _run(job: str, n: int, dim: int, seed: int, reps: int, queue, hierarchy: str = "sop", precision: str = "") -> None:
    import torch

    if job == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    else:
        from common.metrics.retrieval import evaluate_retrieval
        from common.metrics.retrieval_precision import candidate_precision
    x, labels = (make_inat_like if hierarchy == "inat" else make_sop_like)(n, dim, seed)
    warm_x, warm_y = make_sop_like(256, dim, seed + 1)
    base = _peak_rss_mb()
    res: dict = {}
    if job == "pml":
        calc = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
        calc.get_accuracy(warm_x, warm_y[:, 0])
        res["time"], raw = _best_of(lambda: calc.get_accuracy(x, labels[:, 0]), reps)
        res["values"] = {PML_KEYS[k]: float(v) for k, v in raw.items()}
    else:
        t0 = time.perf_counter()
        choice = candidate_precision("cpu")
        res["probe_s"], res["choice"] = time.perf_counter() - t0, choice.describe()
        res["precision"] = choice.precision.name
        if job == "ours":
            evaluate_retrieval(warm_x, warm_y[:, 0], metrics=OURS_METRICS)
            res["time"], res["values"] = _best_of(
                lambda: evaluate_retrieval(x, labels[:, 0], metrics=OURS_METRICS), reps
            )
        elif job == "full":
            evaluate_retrieval(warm_x, warm_y, metrics=FULL_METRICS)
            res["time"], res["values"] = _best_of(lambda: evaluate_retrieval(x, labels, metrics=FULL_METRICS), reps)
        elif job == "bare":
            res["bare"] = _bare_matmuls(x, precision or choice.precision.name, reps)  # the precision ours used
        elif job == "bare_full":
            res["time"] = _full_matmul_fp32(x, reps)
    res.update(rss_data=base, rss_peak=_peak_rss_mb())
    queue.put(res)


def measure(job: str, n: int, dim: int, seed: int, reps: int, hierarchy: str = "sop", precision: str = "") -> dict:
    """Run one measurement in a fresh spawned process; a process that dies (e.g. killed for memory) is an error."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(job, n, dim, seed, reps, queue, hierarchy, precision))
    proc.start()
    while True:
        try:
            out = queue.get(timeout=5)
            break
        except Exception:  # queue.Empty: still running, unless the process died
            if not proc.is_alive():
                raise RuntimeError(f"the {job} measurement at N={n} died (exit code {proc.exitcode}; -9: killed, "
                                   "often for memory)") from None  # fmt: skip
    proc.join()
    return out


def machine_summary() -> list[str]:
    """The CPU model, the flags that decide the candidate pass's precision, torch's view and any emulation."""
    import torch

    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    have = " ".join(f for f in CPU_FLAGS if f in flags) or "none of " + " ".join(CPU_FLAGS)
    lines = [
        f"CPU: {model}, {os.cpu_count()} logical cores; flags: {have}",
        f"torch {torch.__version__}: CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads",
    ]
    env = [f"{k}={os.environ[k]}" for k in EMULATION_VARS if k in os.environ]
    if env:
        lines.append("emulation: " + " ".join(env))
    return lines


def _check_values(ours: dict, pml: dict, n: int) -> float:
    worst = max(abs(ours[k] - v) for k, v in pml.items())
    if worst > 1e-6:  # one query whose positive and negative are closer than float32 resolution moves a mean by 1/N
        print(f"  note: values differ by {worst:.2e} <= 2/N = {2 / n:.2e}: one or two queries rank a near-tied "
              "positive/negative pair differently (PML: float32 L2 distances, ours: exact)")  # fmt: skip
    assert worst <= max(1e-6, 2.0 / n), f"ours and PML differ by {worst:.3e}"
    return worst


def run_sweep(sizes: list[int], dim: int, seed: int, reps: int, full: bool) -> None:
    rows = []
    for n in sizes:
        r = reps if n < 20000 else 1
        t0 = time.perf_counter()
        pml = measure("pml", n, dim, seed, r)
        ours = measure("ours", n, dim, seed, r)
        bare = measure("bare", n, dim, seed, r, precision=ours["precision"])["bare"]
        if not rows:
            print(f"precision probe ({ours['probe_s'] * 1e3:.0f} ms, once per process): {ours['choice']}")
        p = ours["precision"]
        worst = _check_values(ours["values"], pml["values"], n)
        ratio = ours["time"] / pml["time"]
        rows.append((n, pml["time"], ours["time"], ratio, p, bare[p], bare["fp32"], worst))
        print(f"N={n}: PML {pml['time']:.3f} s (peak RSS {pml['rss_peak']:.0f} MB) | ours {ours['time']:.3f} s "
              f"(peak RSS {ours['rss_peak']:.0f} MB, data {ours['rss_data']:.0f} MB) = {ratio:.3f}x PML | bare "
              f"matmul {p} {bare[p]:.3f} s = {bare[p] / pml['time']:.3f}x PML (ours {ours['time'] / bare[p]:.2f}x "
              f"it), fp32 {bare['fp32']:.3f} s = {bare['fp32'] / pml['time']:.3f}x PML | max |diff| {worst:.1e} | "
              f"wall {time.perf_counter() - t0:.0f} s for this N", flush=True)  # fmt: skip
    graded = None
    if full:
        n = sizes[-1]
        fl = measure("full", n, dim, seed, 1)
        mm = measure("bare_full", n, dim, seed, 1)
        graded = fl["time"] / rows[-1][1]
        vals = ", ".join(f"{k}={v:.6f}" for k, v in fl["values"].items() if not k.startswith("num_"))
        print(f"N={n} full ranking map/ndcg/hap/asi (count engine): {fl['time']:.2f} s = {graded:.2f}x PML's binary "
              f"time, peak RSS {fl['rss_peak']:.0f} MB; dense float32 matmul alone {mm['time']:.2f} s "
              f"(graded pass = {fl['time'] / mm['time']:.2f}x it); {vals}")  # fmt: skip
    print()
    print(f"{'N':>7} {'PML s':>8} {'ours s':>8} {'ours/PML':>9} {'matmul':>7} {'bare s':>8} {'bare fp32 s':>12}")
    for n, t_pml, t_ours, ratio, p, t_bare, t_fp32, _ in rows:
        print(f"{n:>7} {t_pml:>8.3f} {t_ours:>8.3f} {ratio:>9.3f} {p:>7} {t_bare:>8.3f} {t_fp32:>12.3f}")
    for n, _, _, ratio, *_ in rows:
        print(f"ratio_vs_pml[N={n}]={ratio:.3f}")
    if graded is not None:
        print(f"graded_ratio_vs_pml={graded:.3f}")
    print(f"ratio_vs_pml={rows[-1][3]:.3f}")


def run_graded_only(n: int, dim: int, seed: int, hierarchy: str) -> None:
    full = measure("full", n, dim, seed, 1, hierarchy)
    mm = measure("bare_full", n, dim, seed, 1, hierarchy)
    vals = ", ".join(f"{k}={v:.6f}" for k, v in full["values"].items() if not k.startswith("num_"))
    print(f"{hierarchy}-like set N={n}: ours map/ndcg/hap/asi (full ranking): {full['time']:.2f} s, peak RSS "
          f"{full['rss_peak']:.0f} MB (data alone {full['rss_data']:.0f} MB); {vals}")  # fmt: skip
    print(f"dense float32 matmul alone (same chunks): {mm['time']:.2f} s; graded pass = "
          f"{full['time'] / mm['time']:.2f}x it")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 5000, 20000, 60502], help="sizes (SOP test: 60,502)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3, help="best of this many calls below N = 20,000")
    parser.add_argument("--skip-full", action="store_true", help="skip map/ndcg/hap/asi (the slower graded pass)")
    parser.add_argument("--graded-only", action="store_true", help="only map/ndcg/hap/asi and its matmul (no PML)")
    parser.add_argument("--hierarchy", choices=("sop", "inat"), default="sop", help="inat: a 7-level iNat-like tree")
    args = parser.parse_args()
    for line in machine_summary():
        print(line)
    print(f"SOP-like set: d={args.dim}, seed={args.seed}; metrics P@1, R-precision, MAP@R (all-vs-all)", flush=True)
    if args.graded_only:
        run_graded_only(args.n[-1], args.dim, args.seed, args.hierarchy)
        return
    run_sweep(sorted(args.n), args.dim, args.seed, args.reps, full=not args.skip_full)


if __name__ == "__main__":
    main()
