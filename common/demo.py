"""``make demo``: every method's demo on Fashion-MNIST, two parts at a time on a machine with 2 cores or more, into an
untracked folder.

    python -m common.demo [--out outputs/demo] [--seeds 0,1,2] [--only roadmap happier] [--jobs 2] [<hydra overrides>]

(Hydra overrides go to the retrieval demos, :data:`LAUNCHER_DEMOS`.)

Each method ships ``<method>/demo.py`` (``python -m <method>.demo --out <out> --seeds ...``): a thin script that runs
the launcher on ``configs/experiment/<method>/demo*.yaml`` (one Hydra multirun over rows and seeds, :func:`launch`),
whose runs write result records (table ``demo``) into ``<out>/records`` and log to wandb offline; it then reads the
records back and writes ``<out>/<method>.json`` (with ``headline``: the method's line of the summary, and ``claim``:
the paper's claim and the verdict from the seeds) and ``<out>/<method>.md``. A part may be run by another package's
script (:data:`PART_SCRIPTS`: the ``multilabel`` part is ``python -m happier.demo --part multilabel``). This runner
runs the parts ``--jobs`` at a time (every part is single-threaded, so the numbers do not depend on it; side by side,
each part's output goes to ``<out>/logs/<part>.log``), times each part and writes
``<out>/SUMMARY.md``: the headline table (:func:`headline`), then every part's table and command.

Nothing is written to tracked files: ``<out>`` defaults to ``outputs/demo`` (git-ignored). The committed reference
run is ``results/reference/`` (made by the command in ``results/reference/COMMAND.md``); ``make report`` says where
a run differs from it beyond run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.results.record import ResultRecord, load_records

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ("roadmap", "happier", "multilabel", "heat", "gallop")
# the demos that take `make demo`'s Hydra overrides: their configs share the retrieval demos' keys (HEAT's and GalLoP's
# configs have others: give them overrides through `make demo-heat ARGS=...`)
LAUNCHER_DEMOS = ("roadmap", "happier", "multilabel")
# parts run by another package's demo script: part -> (package, its arguments)
PART_SCRIPTS = {"multilabel": ("happier", ["--part", "multilabel"])}
DEFAULT_OUT = ROOT / "outputs" / "demo"
REFERENCE = ROOT / "results" / "reference"
SEEDS = (0, 1, 2)
FEWSHOT_SEEDS = "1,2,3"
HEADLINE_COLUMNS = ("task", "metric", "ours", "baselines", "verdict")


def script(part: str) -> tuple[str, list[str]]:
    """The package whose ``demo.py`` runs ``part``, and the arguments that select it."""
    return PART_SCRIPTS.get(part, (part, []))


def available(methods: tuple[str, ...] = DEMOS) -> list[str]:
    return [m for m in methods if (ROOT / script(m)[0] / "demo.py").exists()]


def parse_seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def demo_env(out: Path) -> dict[str, str]:
    """The environment of a demo's launcher runs: records into ``<out>/records``, wandb offline unless set, and one
    intra-op thread unless set (the demo's tensors are small; on a shared 2-core machine OpenMP's pool mostly waits)."""
    env = {**os.environ, "RESULTS_RECORDS_DIR": str(Path(out).resolve() / "records")}
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PROJECT_ROOT", str(ROOT))
    return env


def launch(
    experiments: list[str],
    seeds: list[int],
    out: Path,
    name: str,
    overrides: list[str],
    entry: str = "common.launch",
) -> tuple[Path, str]:
    """For each experiment, one Hydra multirun of ``python -m <entry>`` (the launcher, or another Hydra entry point
    such as ``heat.evaluate``) over ``seeds`` (a sweep over ``experiment`` itself would reject overrides of keys that
    only the experiment defines); job folders under ``<out>/runs/<name>/<experiment>/<job>``.

    Returns the folder of the sweeps and the commands as a user would type them. Raises RuntimeError when the
    launcher fails.
    """
    root = Path(out).resolve() / "runs" / name
    shown = []
    for experiment in experiments:
        sweep_dir = root / experiment.replace("/", "_")
        args = ["-m", f"experiment={experiment}", "seed=" + ",".join(str(s) for s in seeds), *overrides]
        cmd = f"python -m {entry} " + " ".join(args)
        print(f"[demo] {cmd}", flush=True)
        rc = subprocess.call(
            [sys.executable, "-m", entry, *args, f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, env=demo_env(out)
        )
        if rc != 0:
            raise RuntimeError(f"the launcher failed (exit {rc}): {cmd}; the runs are under {sweep_dir}")
        shown.append(cmd)
    return root, "; ".join(shown)


def run_dirs(sweep_dir: Path) -> dict[tuple[str, int | None], Path]:
    """``{(row, seed): job folder}`` of the multiruns under ``sweep_dir``, read from each job's ``record.json``."""
    out = {}
    for path in sorted(Path(sweep_dir).rglob("record.json")):
        rec = json.loads(path.read_text())
        out[(rec["row"], rec["seed"])] = path.parent
    return out


def demo_records(out: Path, method: str) -> list[ResultRecord]:
    """The demo records (table ``demo``) of ``method`` under ``<out>/records``."""
    folder = Path(out) / "records"
    recs = load_records(folder) if folder.is_dir() else []
    return [r for r in recs if r.method == method and r.table == "demo"]


@dataclass
class DemoRun:
    """What :func:`run_rows` leaves: the output folder, the seeds, the rows' records, seed 0's job folder per row
    and the launcher commands."""

    out: Path
    seeds: list[int]
    records: list[ResultRecord]
    first_run_dirs: dict[str, Path]
    command: str


def run_rows(method: str, experiments: dict[str, str], argv: list[str] | None, doc: str | None = None) -> DemoRun:
    """The common part of a launcher demo: parse ``--out``/``--seeds`` (other arguments are Hydra overrides), run
    every ``{row: experiment}`` over the seeds (:func:`launch`, test embeddings saved for the report's
    precision-recall curves), and read the records back; raises RuntimeError when a (row, seed) has no record."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where <method>.json/.md, records and runs go")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds")
    args, overrides = parser.parse_known_args(argv)
    out, seeds = Path(args.out), parse_seeds(args.seeds)
    sweep_dir, shown = launch(
        list(experiments.values()), seeds, out, method, ["model.save_test_embeddings=true", *overrides]
    )
    records = [r for r in demo_records(out, method) if r.seed in seeds]
    missing = [(row, s) for row in experiments for s in seeds if not any(r.row == row and r.seed == s for r in records)]
    if missing:
        raise RuntimeError(f"no result record for {missing} under {out / 'records'}")
    jobs = run_dirs(sweep_dir)
    return DemoRun(out, seeds, records, {row: jobs[(row, seeds[0])] for row in experiments}, shown)


def _load(out: Path, method: str) -> dict | None:
    path = out / f"{method}.json"
    return json.loads(path.read_text()) if path.exists() else None


def headline(out: Path) -> str:
    """One Markdown table, a row per method whose ``<method>.json`` holds a ``headline``: ours vs its baselines and
    the verdict against the paper's claim."""
    lines = ["| " + " | ".join(HEADLINE_COLUMNS) + " |", "|---" * len(HEADLINE_COLUMNS) + "|"]
    for method in DEMOS:
        data = _load(Path(out), method)
        if data is not None and data.get("headline"):
            lines.append("| " + " | ".join(str(data["headline"][c]) for c in HEADLINE_COLUMNS) + " |")
    return "\n".join(lines)


# relative CPU cost of each part (measured: `make demo`'s SUMMARY.md, one thread each); with --jobs > 1 the parts
# start most expensive first, so that the lanes end close together
PART_COST = {"happier": 4, "roadmap": 3, "heat": 2, "gallop": 1.5, "multilabel": 1}


def default_jobs() -> int:
    """Parts run at once: one per core, at most 2 (each part is one single-threaded process at a time; a third lane
    on a 2-core machine only interleaves)."""
    return max(1, min(2, os.cpu_count() or 1))


def part_command(method: str, out: Path, seeds: str, overrides: list[str]) -> list[str]:
    """The command of one part: ``python -m <package>.demo [part args] --out <out> --seeds <seeds> [overrides]``."""
    extra = overrides if method in LAUNCHER_DEMOS else []
    # few-shot splits follow CoOp's protocol, seeds 1-3 (GalLoP's scene study); the other demos take --seeds
    seeds = FEWSHOT_SEEDS if method == "gallop" else seeds
    package, part_args = script(method)
    return [sys.executable, "-m", f"{package}.demo", *part_args, "--out", str(out), "--seeds", seeds, *extra]


def run_part(method: str, cmd: list[str], out: Path, log: Path | None) -> tuple[int, float]:
    """Run one part; its output streams to the terminal, or into ``log`` when parts run side by side. Returns (exit
    code, wall seconds)."""
    start = time.perf_counter()
    if log is None:
        rc = subprocess.call(cmd, cwd=ROOT, env=demo_env(out))
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.call(cmd, cwd=ROOT, env=demo_env(out), stdout=fh, stderr=subprocess.STDOUT)
    return rc, time.perf_counter() - start


def run_parts(
    methods: list[str], out: Path, seeds: str, overrides: list[str], jobs: int
) -> dict[str, tuple[int, float]]:
    """Every part, ``jobs`` at a time (each part is its own processes, one thread each: the numbers do not depend on
    ``jobs``). With ``jobs > 1`` each part's output goes to ``<out>/logs/<part>.log`` and a failed part's last lines
    are printed. Returns ``{part: (exit code, wall seconds)}``."""
    order = sorted(methods, key=lambda m: -PART_COST.get(m, 1)) if jobs > 1 else list(methods)
    ended: dict[str, tuple[int, float]] = {}

    def one(method: str) -> None:
        cmd = part_command(method, out, seeds, overrides)
        log = out / "logs" / f"{method}.log" if jobs > 1 else None
        where = f" (output: {log})" if log else ""
        print(f"\n=== {method} demo: started{where} ===", flush=True)
        rc, seconds = run_part(method, cmd, out, log)
        ended[method] = rc, seconds
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"=== {method}: {status} in {seconds:.0f}s ({len(ended)}/{len(methods)} parts done)", flush=True)
        if rc != 0 and log is not None:
            tail = log.read_text(errors="replace").splitlines()[-30:]
            print("\n".join(f"  {method}| {line}" for line in tail), file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, order))
    return ended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="run only these methods")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where everything goes (default outputs/demo)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="parts run side by side (default: one per core, at most 2; 1 streams every part's output here)",
    )
    args, overrides = parser.parse_known_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    methods = args.only or available()
    skipped = [m for m in methods if m not in LAUNCHER_DEMOS]
    if overrides and skipped:  # said once, before anything runs: these parts run with their own configs
        print(
            f"demo: the overrides {' '.join(overrides)} go to {', '.join(m for m in methods if m in LAUNCHER_DEMOS)} "
            f"only; {', '.join(skipped)} run as configured (give them overrides with "
            + ", ".join(f"make demo-{m} ARGS=..." for m in skipped)
            + ")",
            file=sys.stderr,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ended = run_parts(methods, out, args.seeds, overrides, args.jobs)
    wall = time.perf_counter() - start
    timings = {m: ended[m][1] for m in methods if m in ended}
    failed = [m for m in methods if ended.get(m, (1, 0))[0] != 0]
    command = "python -m common.demo " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Demo results (Fashion-MNIST, CPU)", "", f"Made by `{command.strip()}`.", ""]
    lines += [headline(out), ""]
    for method in methods:
        md = out / f"{method}.md"
        if md.exists():
            lines += [md.read_text().strip(), ""]
    lines.append("Wall time per part: " + ", ".join(f"{m} {t:.0f} s" for m, t in timings.items()))
    lines.append(
        f"Total: {wall:.0f} s wall ({sum(timings.values()):.0f} s of parts, {args.jobs} at a time) on "
        f"{os.cpu_count()} cores; load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + "."
    )
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    if failed:
        print(f"demo parts failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
