"""Retrieval metrics: ours (common.metrics.retrieval) vs pytorch-metric-learning's AccuracyCalculator, same data.

Data: an SOP-like synthetic set (fixed seed): N items in classes of 2 to 12 images, 12 super-categories, d = 512;
embeddings = category direction + class direction + item noise (cosine: same class ~0.3, same category ~0.1).

PML: ``AccuracyCalculator(include=(precision_at_1, r_precision, mean_average_precision_at_r), k="max_bin_count")``
with its default faiss-cpu kNN (``IndexFlatL2``), exactly as ROADMAP evaluates. Ours: ``evaluate_retrieval`` with
the same three metrics (full ranking, exact float64 ranking through the bf16 candidate pass), then the full-ranking
``map``, ``ndcg``, ``hap``, ``asi`` on the [class, category] labels. Each measurement runs in a fresh process
(spawned, data regenerated from the seed) and reports its wall time and peak RSS; the data alone is reported too.

Tie caveat: PML orders tied neighbours as faiss returns them, we order them pessimistically; the synthetic data
has no exact ties, but PML ranks by float32 L2 distances (||q||^2 + ||x||^2 - 2 q.x, rounding ~1e-7) and we by
exact (float64) cosines, so a positive and a negative closer than float32 resolution may be swapped in a query.
Values must agree to 1e-6, or to 2/N (one or two such queries) with a printed note.

Usage: ``python benchmarks/bench_retrieval_metrics.py [--n 60502] [--skip-full]`` (``make bench-metrics``).
The closing line is ``ratio_vs_pml=<ours / PML time for the three PML metrics>``.
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run(job: str, n: int, dim: int, seed: int, queue) -> None:
    import torch

    x, labels = make_sop_like(n, dim, seed)
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if job == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
        raw = calc.get_accuracy(x, labels[:, 0])
        values = {PML_KEYS[k]: float(v) for k, v in raw.items()}
    else:
        from common.metrics.retrieval import evaluate_retrieval

        if job == "ours":
            values = evaluate_retrieval(x, labels[:, 0], metrics=("precision_at_1", "r_precision", "map_at_r"))
        else:  # full-ranking and graded metrics on the hierarchy
            values = evaluate_retrieval(x, labels, metrics=("map", "ndcg", "hap", "asi"))
    elapsed = time.perf_counter() - t0
    queue.put({"time": elapsed, "values": values, "rss_data": base, "rss_peak": _peak_rss_mb()})


def measure(job: str, n: int, dim: int, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(job, n, dim, seed, queue))
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
    args = parser.parse_args()

    import torch

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
    if args.n > 0 and not args.skip_full:
        full = measure("full", args.n, args.dim, args.seed)
        vals = ", ".join(f"{k}={v:.6f}" for k, v in full["values"].items() if not k.startswith("num_"))
        print(f"ours map/ndcg/hap/asi (full ranking): {full['time']:.2f} s = {full['time'] / pml['time']:.2f}x PML, "
              f"peak RSS {full['rss_peak']:.0f} MB; {vals}")  # fmt: skip
    # one query whose positive and negative are closer than float32 resolution can move a mean by up to 1/N
    if worst > 1e-6:
        print(f"  note: values differ by {worst:.2e} <= 2/N = {2 / args.n:.2e}: one or two queries out of {args.n} "
              "rank a near-tied positive/negative pair differently (PML: float32 L2 distances, ours: exact)")  # fmt: skip
    assert worst <= max(1e-6, 2.0 / args.n), f"ours and PML differ by {worst:.3e}"
    print(f"ratio_vs_pml={ratio:.3f}")


if __name__ == "__main__":
    main()
