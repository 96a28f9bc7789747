"""`make rehearse`: every paper table end to end on tiny synthetic data, on CPU, in minutes.

1. :func:`common.rehearsal.layouts.write_all` writes tiny datasets in every official layout into ``<out>/data``;
2. each ``make table-*`` target of :data:`TARGETS` runs as a user would run it, with ``DATA_DIR`` pointing there and
   the tiny overrides of :data:`OVERRIDES` passed through the target's own make variable (``ARGS``, ``HEAT_ARGS``,
   ``GALLOP_ARGS``): random-init tiny backbones (timm's ``test_resnet``, the repo's ``tiny_clip``), one training
   step, CPU, one seed. Records go to ``<out>/records`` (``RESULTS_RECORDS_DIR``), run folders to ``<out>/logs``;
3. ``make tables`` and ``make report`` build every table and the report into ``<out>/tables`` and ``<out>/report``
   (``RESULTS_TABLES_DIR``, ``RESULTS_REPORT_DIR``), never into the committed results/;
4. :func:`common.rehearsal.check.empty_cells` reads ``<out>/tables/tables.json`` and fails naming every cell of ours
   that is empty.

The methods are independent: their targets run in ``--jobs`` parallel lanes (2 by default, one method at a time per
lane, each method's targets in order), each lane logging to ``<out>/rehearsal-<method>.log``. Every target's wall
time and CPU time (user + sys of make and everything it started) are printed and written to ``<out>/timings.json``
with the load average at the start and the end: the CPU time depends little on what else runs on the machine.

The numbers mean nothing (random weights, one step): the rehearsal checks that every table can be filled.

    python -m common.rehearsal.run [--out outputs/rehearsal] [--method roadmap ...] [--ci] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from common.rehearsal.check import empty_cells
from common.rehearsal.layouts import write_all

ROOT = Path(__file__).resolve().parents[2]

# every `make table-*` target of mk/*.mk: run here, or reached through the target that runs it
TARGETS = {
    "roadmap": ["table-roadmap", "table-roadmap-losses", "table-roadmap-xbm", "table-roadmap-tpami"],
    # tiny GLDv2: 8 training landmarks (proxies); the COCO rows draw 8 queries and 32 training images from the tiny pool
    "happier": [
        "table-happier",
        "table-happier-hgldv2 HGLDV2_LANDMARKS=8",
        "table-happier-coco COCO_QUERIES=8 COCO_TRAIN=32",
    ],
    "heat": ["features-heat-cifar10", "features-heat-cifar100", "features-heat-imagenet", "table-heat"],
    "gallop": ["table-gallop", "table-gallop-parity", "table-gallop-shots", "table-gallop-baselines"],
}
REACHED_BY = {
    "table-happier-sop": "table-happier",
    "table-happier-inat-base": "table-happier",
    "table-happier-inat-full": "table-happier",
    "table-happier-dyml-vehicle": "table-happier",
    "table-happier-dyml-animal": "table-happier",
    "table-happier-dyml-product": "table-happier",
    "table-happier-collect": "table-happier",
    "table-heat-eval": "table-heat",
    "table-gallop-render": "table-gallop",
}
# CI: per method, the smallest target that fills a whole table ("<target> [VAR=value ...]")
CI_TARGETS = {
    "roadmap": ["table-roadmap-xbm"],
    "happier": ["table-happier-dyml-product"],
    "heat": ["features-heat-cifar10", "table-heat HEAT_DATASETS=cifar10"],
    "gallop": ["table-gallop-baselines", "table-gallop GALLOP_DATASETS=imagenet"],
}

_CPU_ONE_STEP = [
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32-true",
    "++trainer.max_steps=1",
    "++trainer.limit_train_batches=1",
    "++trainer.limit_val_batches=1",
    "++trainer.num_sanity_val_steps=0",
    "++data.num_workers=0",
    "++extras.print_config=false",
]
OVERRIDES = {
    # ResNet-50 and DeiT rows alike run timm's random-init `test_resnet` (96-d features). `++`: some rows lack
    # some of these keys (a multirun's launcher passes a plain key that every swept experiment has as `++` itself)
    "retrieval": [
        *_CPU_ONE_STEP,
        "++data.pin_memory=false",
        "++model.net.backbone.name=test_resnet",
        "++model.net.backbone.weights=null",
        "++data.batch_size=16",
        "++data.eval_batch_size=64",
        # one test batch: every test set but CUB's (400 images at 224 px, most of a row's time) fits in it
        "++trainer.limit_test_batches=1",
    ],
    # the authors' ResNet-34/-50 checkpoints -> a random-init ResNet-18 (the CIFAR stem needs a plain conv1)
    "heat": [
        *_CPU_ONE_STEP,
        "extract.backbone.name=resnet18",
        "extract.backbone.checkpoint=null",
        "extract.backbone_name=rehearsal-resnet18",
        "model.mlp.in_dim=512",  # ResNet-18 features (ImageNet's rows expect ResNet-50's 2048)
        "++heat_eval.baselines.knn.k=5",  # ImageNet's k=1000 needs 1000 training images; the tiny set has 12
        "extract.batch_size=64",
        "data.batch_size=32",
    ],
    # CLIP ViT-B/16 -> the repo's random-init tiny_clip (ViT, 32 px, 16 patches); `++` as above (GalLoP's tables
    # are multiruns too)
    "gallop": [
        *_CPU_ONE_STEP,
        "++model.net.clip.model_name=tiny_clip",
        "++model.net.clip.pretrained=null",
        "++model.net.clip.quick_gelu=null",
        "++model.net.clip.seed=0",
        "++model.topk=[4]",  # one k for every local prompt (16 patches on the tiny ViT)
        "++data.train_dataset.transform.image_size=32",
        "++data.test_dataset.transform.image_size=32",
        "++data.batch_size=8",
        "++data.eval_batch_size=32",
        "++data.pin_memory=false",
    ],
}


def make_vars(method: str, out: Path, target: str = "") -> list[str]:
    """The make variables that carry the overrides (and the run folders) into ``method``'s table ``target``."""
    logs = out / "logs"
    if method == "roadmap":  # one multirun folder per target (a multirun moves a used folder aside)
        args = [*OVERRIDES["retrieval"], f"hydra.sweep.dir={logs}/roadmap/{target or 'table'}"]
        # the XBM rows leave the memory's (unpublished) loss weight to the user
        return [f"ARGS={' '.join(args)}", "XBM_ARGS=++model.memory.weight=1.0 ++model.memory.activate_after=0"]
    if method == "happier":
        return [f"ARGS={' '.join(OVERRIDES['retrieval'])}", f"HAPPIER_RUNS={logs}/happier"]
    if method == "heat":
        # heat.evaluate also writes its raw numbers to heat_eval.out_dir (results/heat by default): keep them here
        # and heat.extract / heat.evaluate keep Hydra's default run folder under paths.log_dir
        args = [*OVERRIDES["heat"], f"++heat_eval.out_dir={out}/heat_eval", f"paths.log_dir={logs}"]
        return [f"HEAT_ARGS={' '.join(args)}", f"HEAT_RUNS={logs}/heat"]
    if method == "gallop":
        return [f"GALLOP_ARGS={' '.join(OVERRIDES['gallop'])}", f"GALLOP_RUNS={logs}/gallop", "GALLOP_SEEDS=1"]
    raise ValueError(f"unknown method {method!r}")


def environment(out: Path) -> dict[str, str]:
    """Where everything goes: data, records, tables, report, caches, weights, all under ``out``."""
    # each `make` here is a top-level one: variables given to `make rehearse` (ARGS="--out ...") must not reach it.
    # GNU make passes them on twice: in MAKEFLAGS and as environment variables of the recipe (`make tables` would read
    # that ARGS and hand `--out ...` to the collector)
    makeflags = os.environ.get("MAKEFLAGS", "")
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "ARGS"}
    drop |= set(re.findall(r"(?:^|(?<=\s))([A-Za-z_][A-Za-z0-9_]*)=", makeflags))
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        DATA_DIR=str(out / "data"),
        RESULTS_RECORDS_DIR=str(out / "records"),
        RESULTS_TABLES_DIR=str(out / "tables"),
        RESULTS_REPORT_DIR=str(out / "report"),
        CACHE_DIR=str(out / "cache"),
        WEIGHTS_DIR=str(out / "weights"),
        WANDB_MODE="offline",
        WANDB_DIR=str(out / "wandb"),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env


@dataclass
class Timing:
    """One ``make`` call of the rehearsal: wall time and CPU time (user + sys of make and all it started), seconds."""

    method: str
    target: str
    wall_s: float
    cpu_s: float


def run_make(target: str, variables: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """``make <target> <variables>`` with its output appended to ``log``; returns (wall, CPU) seconds."""
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"\n### make {target} {' '.join(variables)}\n")
        f.flush()
        proc = subprocess.Popen(
            ["make", "--no-print-directory", target, *variables], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        )
        if hasattr(os, "wait4"):  # the child's own rusage: the CPU time of make and every process it waited for
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
        else:
            proc.wait()
            cpu = math.nan
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"rehearsal: `make {target}` failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    return seconds, cpu


_print_lock = threading.Lock()


def _say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def run_method(method: str, entries: list[str], out: Path, env: dict[str, str]) -> list[Timing]:
    """Run one method's targets in order (``"<target> [VAR=value ...]"``), logging to ``<out>/rehearsal-<method>.log``."""
    timings = []
    for entry in entries:
        target, *extra = entry.split()
        wall, cpu = run_make(target, [*make_vars(method, out, target), *extra], env, out / f"rehearsal-{method}.log")
        timings.append(Timing(method, target, wall, cpu))
        _say(f"rehearsal: [{method}] make {target}: {wall:.0f} s wall, {cpu:.0f} s CPU")
    return timings


def run_lanes(targets: dict[str, list[str]], out: Path, env: dict[str, str], jobs: int) -> list[Timing]:
    """Every method's targets, ``jobs`` methods at a time (in the order of ``targets``); raises naming every failure."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {m: pool.submit(run_method, m, entries, out, env) for m, entries in targets.items()}
    timings, failures = [], []
    for future in futures.values():
        try:
            timings += future.result()
        except RuntimeError as e:
            failures.append(str(e))
    if failures:
        raise SystemExit("\n\n".join(failures))
    return timings


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def rehearse(out: Path, targets: dict[str, list[str]], methods: list[str] | None = None, jobs: int = 2) -> list[str]:
    """Run the rehearsal into ``out`` (emptied first); returns the empty cells (none when it passed)."""
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = environment(out)
    load_start, t0, cpu0 = _load(), time.perf_counter(), time.process_time()
    write_all(out / "data")
    timings = [Timing("-", "write tiny datasets", time.perf_counter() - t0, time.process_time() - cpu0)]
    _say(f"rehearsal: tiny datasets written to {out / 'data'} ({timings[0].wall_s:.0f} s)")
    timings += run_lanes(targets, out, env, jobs)
    for target in ("tables", "report"):
        try:
            wall, cpu = run_make(target, [], env, out / "rehearsal.log")
        except RuntimeError as e:
            raise SystemExit(str(e)) from None
        timings.append(Timing("-", target, wall, cpu))
        _say(f"rehearsal: make {target}: {wall:.0f} s wall, {cpu:.0f} s CPU")
    empty = empty_cells(out / "tables" / "tables.json", methods=methods)
    total = {"wall_s": time.perf_counter() - t0, "cpu_s": sum(t.cpu_s for t in timings)}
    summary = {**total, "jobs": jobs, "cpus": os.cpu_count(), "load_start": load_start, "load_end": _load()}
    (out / "timings.json").write_text(json.dumps({**summary, "targets": [asdict(t) for t in timings]}, indent=1))
    _say(
        f"rehearsal: {total['wall_s']:.0f} s wall, {total['cpu_s']:.0f} s CPU in all ({jobs} lanes, load average "
        f"{load_start} at the start, {summary['load_end']} at the end); timings {out / 'timings.json'}; "
        f"logs {out}/rehearsal*.log; report {out / 'report' / 'index.html'}"
    )
    return empty


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "outputs" / "rehearsal"), help="scratch folder (emptied first)")
    p.add_argument("--ci", action="store_true", help="one table per method (CI_TARGETS), checked for those tables")
    p.add_argument("--method", action="append", choices=sorted(TARGETS), help="only these methods (repeatable)")
    p.add_argument("--jobs", type=int, default=2, help="methods rehearsed at the same time (default 2)")
    args = p.parse_args(argv)
    chosen = CI_TARGETS if args.ci else TARGETS
    targets = {m: t for m, t in chosen.items() if not args.method or m in args.method}
    empty = rehearse(Path(args.out), targets, methods=list(targets) if args.ci or args.method else None, jobs=args.jobs)
    if args.ci:
        empty = [e for e in empty if e.split(" ", 1)[0] in CI_TABLES]
    if empty:
        sys.exit("rehearsal: empty cells of ours:\n  " + "\n  ".join(empty))
    print("rehearsal: every cell of ours is filled")


# the tables that CI_TARGETS fill (`<method>/<table>`)
CI_TABLES = {"roadmap/xbm", "happier/dyml_product", "heat/cifar10", "gallop/dg"}

if __name__ == "__main__":
    main()
