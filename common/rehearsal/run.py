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

The numbers mean nothing (random weights, one step): the rehearsal checks that every table can be filled.

    python -m common.rehearsal.run [--out outputs/rehearsal] [--targets table-roadmap table-heat ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
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
    # ResNet-50 and DeiT rows alike run timm's random-init `test_resnet` (96-d features). `++`: a multirun also
    # composes the overrides on the root config (Fashion-MNIST data) before the experiments
    "retrieval": [
        *_CPU_ONE_STEP,
        "++data.pin_memory=false",
        "++model.net.backbone.name=test_resnet",
        "++model.net.backbone.weights=null",
        "++data.batch_size=16",
        "++data.eval_batch_size=64",
    ],
    # the authors' ResNet-34/-50 checkpoints -> a random-init ResNet-18 (the CIFAR stem needs a plain conv1)
    "heat": [
        *_CPU_ONE_STEP,
        "extract.backbone.name=resnet18",
        "extract.backbone.checkpoint=null",
        "extract.backbone_name=rehearsal-resnet18",
        "extract.batch_size=64",
        "data.batch_size=32",
    ],
    # CLIP ViT-B/16 -> the repo's random-init tiny_clip (ViT, 32 px, 16 patches)
    "gallop": [
        *_CPU_ONE_STEP,
        "model.net.clip.model_name=tiny_clip",
        "model.net.clip.pretrained=null",
        "model.net.clip.quick_gelu=null",
        "++model.net.clip.seed=0",
        "model.topk=[4]",  # one k for every local prompt (16 patches on the tiny ViT)
        "data.train_dataset.transform.image_size=32",
        "data.test_dataset.transform.image_size=32",
        "data.batch_size=8",
        "data.eval_batch_size=32",
        "data.pin_memory=false",
    ],
}


def make_vars(method: str, out: Path) -> list[str]:
    """The make variables that carry the overrides (and the run folders) into ``method``'s table targets."""
    logs = out / "logs"
    if method == "roadmap":
        args = [*OVERRIDES["retrieval"], f"hydra.sweep.dir={logs}/roadmap"]
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
    # each `make` here is a top-level one: variables given to `make rehearse` (ARGS=--method ...) must not reach it
    drop = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
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


def run_make(target: str, variables: list[str], env: dict[str, str], log: Path) -> float:
    """``make <target> <variables>`` with its output appended to ``log``; returns the wall time in seconds."""
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"\n### make {target} {' '.join(variables)}\n")
        f.flush()
        proc = subprocess.run(
            ["make", "--no-print-directory", target, *variables], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"rehearsal: `make {target}` failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    return seconds


def rehearse(out: Path, targets: dict[str, list[str]], methods: list[str] | None = None) -> list[str]:
    """Run the rehearsal into ``out`` (emptied first); returns the empty cells (none when it passed)."""
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = environment(out)
    log = out / "rehearsal.log"
    t0 = time.perf_counter()
    write_all(out / "data")
    print(f"rehearsal: tiny datasets written to {out / 'data'} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for method, names in targets.items():
        for entry in names:  # "<target> [VAR=value ...]"
            target, *extra = entry.split()
            seconds = run_make(target, [*make_vars(method, out), *extra], env, log)
            print(f"rehearsal: make {target}: {seconds:.0f} s", flush=True)
    for target in ("tables", "report"):
        seconds = run_make(target, [], env, log)
        print(f"rehearsal: make {target}: {seconds:.0f} s", flush=True)
    empty = empty_cells(out / "tables" / "tables.json", methods=methods)
    print(f"rehearsal: {time.perf_counter() - t0:.0f} s in all; log {log}; report {out / 'report' / 'index.html'}")
    return empty


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "outputs" / "rehearsal"), help="scratch folder (emptied first)")
    p.add_argument("--ci", action="store_true", help="one table per method (CI_TARGETS), checked for those tables")
    p.add_argument("--method", action="append", choices=sorted(TARGETS), help="only these methods (repeatable)")
    args = p.parse_args(argv)
    chosen = CI_TARGETS if args.ci else TARGETS
    targets = {m: t for m, t in chosen.items() if not args.method or m in args.method}
    empty = rehearse(Path(args.out), targets, methods=list(targets) if args.ci or args.method else None)
    if args.ci:
        empty = [e for e in empty if e.split(" ", 1)[0] in CI_TABLES]
    if empty:
        sys.exit("rehearsal: empty cells of ours:\n  " + "\n  ".join(empty))
    print("rehearsal: every cell of ours is filled")


# the tables that CI_TARGETS fill (`<method>/<table>`)
CI_TABLES = {"roadmap/xbm", "happier/dyml_product", "heat/cifar10", "gallop/dg"}

if __name__ == "__main__":
    main()
