"""Retrieval metrics: ours (common.metrics.retrieval) vs pytorch-metric-learning's AccuracyCalculator, same data.

Data: an SOP-like synthetic set (fixed seed): N items in classes of 2 to 12 images, 12 super-categories, d = 512;
embeddings = category direction + class direction + item noise (cosine: same class ~0.3, same category ~0.1).

PML: ``AccuracyCalculator(include=(precision_at_1, r_precision, mean_average_precision_at_r), k="max_bin_count")``
with its default faiss-cpu kNN (``IndexFlatL2``), exactly as ROADMAP evaluates. Ours: ``evaluate_retrieval`` with
the same three metrics (full ranking, exact float64 ranking through the bf16 candidate pass), then the full-ranking
``map``, ``ndcg``, ``hap``, ``asi`` on the [class, category] labels (dense float32 scores, counting engine). Each
measurement runs in a fresh process (spawned, data regenerated from the seed) and reports its wall time and peak
RSS; the data alone is reported too.

Matmul limits: the same chunked products with nothing else, ``torch.mm`` in bfloat16 (the candidate pass's matmul)
and numpy float32 (the graded pass's matmul), N x N x d each. They say how close each pass is to the machine's
compute limit: ours = X x the bf16 matmul alone.

Tie caveat: PML orders tied neighbours as faiss returns them, we order them pessimistically; the synthetic data
has no exact ties, but PML ranks by float32 L2 distances (||q||^2 + ||x||^2 - 2 q.x, rounding ~1e-7) and we by
exact (float64) cosines, so a positive and a negative closer than float32 resolution may be swapped in a query.
Values must agree to 1e-6, or to 2/N (one or two such queries) with a printed note.

Usage: ``python benchmarks/bench_retrieval_metrics.py [--n 60502] [--skip-full]`` (``make bench-metrics``);
``--graded-only --hierarchy inat --n 136093`` times the graded pass alone on an iNat-2018-sized 7-level tree.
The machine is often shared: compare the ratios printed by one run, not times across runs. The closing line is
``ratio_vs_pml=<ours / PML time for the three PML metrics>``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


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


def _run(job: str, n: int, dim: int, seed: int, queue, hierarchy: str = "sop") -> None:
    import torch

    x, labels = (make_inat_like if hierarchy == "inat" else make_sop_like)(n, dim, seed)
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if job == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
        raw = calc.get_accuracy(x, labels[:, 0])
        values = {PML_KEYS[k]: float(v) for k, v in raw.items()}
    elif job in ("mm_bf16", "mm_fp32"):
        values = _matmul_only(x, job)
    else:
        from common.metrics.retrieval import evaluate_retrieval

        if job == "ours":
            values = evaluate_retrieval(x, labels[:, 0], metrics=("precision_at_1", "r_precision", "map_at_r"))
        else:  # full-ranking and graded metrics on the hierarchy
            values = evaluate_retrieval(x, labels, metrics=("map", "ndcg", "hap", "asi"))
    elapsed = time.perf_counter() - t0
    queue.put({"time": elapsed, "values": values, "rss_data": base, "rss_peak": _peak_rss_mb()})


def _matmul_only(x, job: str) -> dict:
    """All N x N scores in the chunks our passes use, nothing else (the compute limit of each pass)."""
    import numpy as np
    import torch

    from common.metrics.retrieval import _ELEMS_BF16, _ELEMS_COUNT

    n = x.shape[0]
    if job == "mm_bf16":
        step = max(1, _ELEMS_BF16 // n)
        xb = x.bfloat16()
        xt = xb.T.contiguous()
        buf = torch.empty(step, n, dtype=torch.bfloat16)
        for s in range(0, n, step):
            q = xb[s : s + step]
            torch.mm(q, xt, out=buf[: q.shape[0]])
    else:
        step = max(1, _ELEMS_COUNT // n)
        xn = x.numpy()
        buf = np.empty((step, n), dtype=np.float32)
        for s in range(0, n, step):
            q = xn[s : s + step]
            np.matmul(q, xn.T, out=buf[: q.shape[0]])
    return {}


def measure(job: str, n: int, dim: int, seed: int, hierarchy: str = "sop") -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(job, n, dim, seed, queue, hierarchy))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60502, help="number of items (SOP test set: 60,502)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-full", action="store_true", help="skip map/ndcg/hap/asi (the slower graded pass)")
    parser.add_argument(
        "--graded-only", action="store_true", help="only map/ndcg/hap/asi and the float32 matmul limit (no PML)"
    )
    parser.add_argument("--hierarchy", choices=("sop", "inat"), default="sop", help="inat: a 7-level iNat-like tree")
    args = parser.parse_args()

    import torch

    if args.graded_only:
        print(
            f"{args.hierarchy}-like set: N={args.n}, d={args.dim}, seed={args.seed}, threads={torch.get_num_threads()}"
        )
        full = measure("full", args.n, args.dim, args.seed, args.hierarchy)
        mm_fp32 = measure("mm_fp32", args.n, args.dim, args.seed, args.hierarchy)
        vals = ", ".join(f"{k}={v:.6f}" for k, v in full["values"].items() if not k.startswith("num_"))
        print(f"ours map/ndcg/hap/asi (full ranking): {full['time']:.2f} s, peak RSS {full['rss_peak']:.0f} MB "
              f"(data alone {full['rss_data']:.0f} MB); {vals}")  # fmt: skip
        print(f"matmul limit, float32 (numpy, same chunks): {mm_fp32['time']:.2f} s; graded pass = "
              f"{full['time'] / mm_fp32['time']:.2f}x this limit")  # fmt: skip
        return

    print(f"SOP-like set: N={args.n}, d={args.dim}, seed={args.seed}, torch threads={torch.get_num_threads()}")
    pml = measure("pml", args.n, args.dim, args.seed)
    ours = measure("ours", args.n, args.dim, args.seed)
    print(f"PML AccuracyCalculator (faiss-cpu kNN): {pml['time']:.2f} s, peak RSS {pml['rss_peak']:.0f} MB "
          f"(data alone {pml['rss_data']:.0f} MB)")  # fmt: skip
    print(f"ours evaluate_retrieval:                {ours['time']:.2f} s, peak RSS {ours['rss_peak']:.0f} MB "
          f"(data alone {ours['rss_data']:.0f} MB)")  # fmt: skip
    worst = 0.0
    for key, ref in pml["values"].items():
        got = ours["values"][key]
        worst = max(worst, abs(got - ref))
        print(f"  {key:12s} ours {got:.8f}  PML {ref:.8f}  |diff| {abs(got - ref):.2e}")
    ratio = ours["time"] / pml["time"]
    mm_bf16 = measure("mm_bf16", args.n, args.dim, args.seed)
    print(f"matmul limit, bf16 (torch.mm, same chunks):  {mm_bf16['time']:.2f} s = {mm_bf16['time'] / pml['time']:.3f}x "
          f"PML; ours = {ours['time'] / mm_bf16['time']:.2f}x this limit")  # fmt: skip
    if args.n > 0 and not args.skip_full:
        full = measure("full", args.n, args.dim, args.seed)
        mm_fp32 = measure("mm_fp32", args.n, args.dim, args.seed)
        vals = ", ".join(f"{k}={v:.6f}" for k, v in full["values"].items() if not k.startswith("num_"))
        print(f"ours map/ndcg/hap/asi (full ranking): {full['time']:.2f} s = {full['time'] / pml['time']:.2f}x PML, "
              f"peak RSS {full['rss_peak']:.0f} MB; {vals}")  # fmt: skip
        print(f"matmul limit, float32 (numpy, same chunks): {mm_fp32['time']:.2f} s; graded pass = "
              f"{full['time'] / mm_fp32['time']:.2f}x this limit")  # fmt: skip
        print(f"graded_ratio_vs_pml={full['time'] / pml['time']:.3f}")
    print(f"matmul_limit_ratio={ours['time'] / mm_bf16['time']:.3f}")
    # one query whose positive and negative are closer than float32 resolution can move a mean by up to 1/N
    if worst > 1e-6:
        print(f"  note: values differ by {worst:.2e} <= 2/N = {2 / args.n:.2e}: one or two queries out of {args.n} "
              "rank a near-tied positive/negative pair differently (PML: float32 L2 distances, ours: exact)")  # fmt: skip
    assert worst <= max(1e-6, 2.0 / args.n), f"ours and PML differ by {worst:.3e}"
    print(f"ratio_vs_pml={ratio:.3f}")


if __name__ == "__main__":
    main()
