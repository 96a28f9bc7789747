"""On a GPU: retrieval metrics (ours vs pytorch-metric-learning) and one training step of each method.

Metrics (``--part metrics``): ours (common.metrics.retrieval) vs pytorch-metric-learning's AccuracyCalculator on the
same SOP-like data as ``bench_retrieval_metrics.py`` (classes of 2 to 12 items, d = 512, fixed seed), on the GPU.
For each N: P@1, R-precision and MAP@R by

* ours: ``evaluate_retrieval`` on CUDA tensors (exact full ranking: the candidate pass in the precision the GPU
  probe chose, float64 rescoring, all-vs-all so half the matmul);
* PML + faiss: ``AccuracyCalculator(k="max_bin_count", device=cuda)`` with its default faiss kNN, which runs on
  the GPU when faiss has GPU support (else faiss searches on the CPU; the line says which);
* PML + torch kNN: the same with ``knn_func=CustomKNN(CosineSimilarity(), batch_size=4096)``, a kNN in torch on the
  GPU (no faiss needed).

and, with ``--graded``, ours on map, ndcg, hap and asi (the tree engine on [class, category] labels) at the largest
N. Every timing is the best of ``--reps`` calls after a warm-up call on 2,048 items (CUDA context, cuBLAS handles,
faiss resources and our once-per-process precision probe are not counted; the probe's own time is printed), with
``torch.cuda.synchronize()`` around each (at most 2 calls from N = 20,000). Peak memory is what torch allocated
(faiss-gpu's own buffers are not counted). After each N comes ``gpu_ratio_vs_pml[N=...]=<ours / PML's fastest>``.

Then (``--part train-step``, :mod:`train_step_timing`) one training step of each method at the paper's shapes and
precision (ROADMAP SOP ResNet-50 and DeiT-S, B = 128; HAPPIER SOP, B = 256 on [product, category] labels; HEAT's
ImageNet GMM and EL rows, B = 256 on 2,048-d features; GalLoP ViT-B/16 with 100 classes at B = 32 and 1,000 at
B = 128), random-init weights, with the share of the step spent in our loss / scorer / prompt code. One line per row:

    train_step[method=roadmap,config=roadmap/sop_resnet50] total_ms=... ours_ms=... share=... backbone_ms=... ...

and a ``train_step_parts[...]`` line with every phase. ``--tiny`` runs the same code on small shapes in float32 with
one rep, on the CPU when there is no GPU, and checks that the phase-by-phase step gives the plain step's gradients.

Needs torch with CUDA and numpy; PML (``pip install pytorch-metric-learning``, which needs faiss: ``faiss-cpu`` or
``faiss-gpu``) for the peer; timm, open_clip, hydra and lightning (the project's dependencies) for the training
steps. Without a CUDA device it prints a line and exits 0 (unless ``--tiny`` or ``--device cpu``). Exit status 1 when
a training-step row fails or its split disagrees with the plain step.

Usage::

    python benchmarks/bench_gpu.py                      # metrics at N = 2k, 5k, 20k, 60,502, then every training step
    python benchmarks/bench_gpu.py --part metrics --n 5000 60502 --graded
    python benchmarks/bench_gpu.py --part train-step --methods roadmap gallop
    python benchmarks/bench_gpu.py --tiny               # training steps on small shapes (CPU is fine): a smoke test
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from bench_retrieval_metrics import make_sop_like

OURS_METRICS = ("precision_at_1", "r_precision", "map_at_r")
GRADED_METRICS = ("map", "ndcg", "hap", "asi")
PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "map@r"}


def _timed(fn, reps: int, device: torch.device) -> tuple[float, object, float]:
    """(best seconds, last output, peak GPU memory in MB allocated by torch; 0 on CPU) of ``reps`` synchronised
    calls."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    best, out = float("inf"), None
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out, torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0


def _pml_calculators(dev: torch.device) -> dict[str, object]:
    """The PML peers available here: name -> AccuracyCalculator (empty when PML is not installed)."""
    try:
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import CustomKNN
    except ImportError as err:
        print(f"PML not importable ({err}): ours only, no ratios")
        return {}
    return {
        "pml+faiss": AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=dev),
        "pml+torch-knn": AccuracyCalculator(
            include=tuple(PML_KEYS),
            k="max_bin_count",
            device=dev,
            knn_func=CustomKNN(CosineSimilarity(), batch_size=4096),
        ),
    }


def _faiss_where() -> str:
    from common.metrics.knn import faiss_gpu_available

    try:
        import faiss  # noqa: F401
    except ImportError:
        return "faiss not installed"
    return "faiss on the GPU" if faiss_gpu_available() else "faiss without GPU support: PML's kNN runs on the CPU"


def run(sizes: list[int], dim: int, seed: int, reps: int, graded: bool, dev: torch.device) -> None:
    from common.metrics.retrieval import evaluate_retrieval
    from common.metrics.retrieval_precision import candidate_precision

    if dev.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()} (compute capability {torch.cuda.get_device_capability()}), "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; {_faiss_where()}")  # fmt: skip
    else:
        print(f"device {dev} (a smoke test of this script, not a GPU measurement)")
    t0 = time.perf_counter()
    choice = candidate_precision(dev)
    print(f"precision probe ({(time.perf_counter() - t0) * 1e3:.0f} ms, once per process): {choice.describe()}")
    peers = _pml_calculators(dev)
    warm_x, warm_y = make_sop_like(2048, dim, seed + 1)
    warm_x, warm_y = warm_x.to(dev), warm_y.to(dev)
    evaluate_retrieval(warm_x, warm_y[:, 0], metrics=OURS_METRICS)
    for calc in peers.values():
        calc.get_accuracy(warm_x, warm_y[:, 0])
    rows = []
    for n in sizes:
        x, labels = make_sop_like(n, dim, seed)
        x, y = x.to(dev), labels[:, 0].to(dev)
        r = reps if n < 20000 else min(reps, 2)
        t_ours, ours, mem_ours = _timed(lambda x=x, y=y: evaluate_retrieval(x, y, metrics=OURS_METRICS), r, dev)
        line = [f"N={n}: ours {t_ours:.3f} s (peak {mem_ours:.0f} MB)"]
        best_peer = None
        for name, calc in peers.items():
            t, raw, mem = _timed(lambda calc=calc, x=x, y=y: calc.get_accuracy(x, y), r, dev)
            worst = max(abs(ours[PML_KEYS[k]] - float(v)) for k, v in raw.items())
            line.append(f"{name} {t:.3f} s (peak {mem:.0f} MB, ours = {t_ours / t:.3f}x, max |diff| {worst:.1e})")
            if worst > max(1e-6, 2.0 / n):  # beyond one or two near-tied queries (float32 L2 vs exact cosine)
                line.append(f"WARNING: {name} differs by {worst:.2e}")
            best_peer = t if best_peer is None else min(best_peer, t)
        print(" | ".join(line), flush=True)
        if best_peer:
            print(f"gpu_ratio_vs_pml[N={n}]={t_ours / best_peer:.3f}", flush=True)
        rows.append((n, t_ours, best_peer))
        del x, y
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if graded:
        n = sizes[-1]
        x, labels = make_sop_like(n, dim, seed)
        x, labels = x.to(dev), labels.to(dev)
        evaluate_retrieval(warm_x, warm_y, metrics=GRADED_METRICS)
        t, vals, mem = _timed(lambda: evaluate_retrieval(x, labels, metrics=GRADED_METRICS), 1, dev)
        shown = ", ".join(f"{k}={v:.6f}" for k, v in vals.items() if not k.startswith("num_"))
        peer = f" = {t / rows[-1][2]:.2f}x PML's binary time" if rows[-1][2] else ""
        print(f"N={n} full ranking map/ndcg/hap/asi (graded engine: tree on CUDA): {t:.2f} s{peer}, peak "
              f"{mem:.0f} MB; {shown}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", choices=("all", "metrics", "train-step"), default=None, help="default: all (train-step with --tiny)"
    )
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 5000, 20000, 60502])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=3, help="metrics: best of this many calls")
    parser.add_argument("--graded", action="store_true", help="also map/ndcg/hap/asi at the largest N")
    parser.add_argument("--device", default=None, help="default cuda ('cpu': a smoke test of this script)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="training steps of these methods or rows only (roadmap happier heat gallop, or a row "
        "name such as gallop_imagenet)",
    )
    parser.add_argument("--step-reps", type=int, default=None, help="training steps: median of this many (5; tiny 1)")
    parser.add_argument(
        "--precision", default=None, help="training steps: force 16-mixed, bf16-mixed or 32-true (default: each row's)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="training steps on small shapes, float32, 1 rep (runs on CPU)"
    )
    args = parser.parse_args(argv)
    part = args.part or ("train-step" if args.tiny else "all")
    if args.tiny and part != "train-step":
        parser.error("--tiny applies to the training steps only: use it with --part train-step (or no --part)")
    if args.device is None:
        args.device = "cpu" if args.tiny and not torch.cuda.is_available() else "cuda"
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: GPU benchmark skipped")
        return 0
    if part in ("all", "metrics"):
        run(sorted(args.n), args.dim, args.seed, args.reps, args.graded, dev)
    if part in ("all", "train-step"):
        from train_step_timing import run as run_train_steps

        failed = run_train_steps(args.methods, args.tiny, dev, args.step_reps, args.precision)
        if failed:
            print(f"{failed} training-step row(s) failed or disagreed with the plain step")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
