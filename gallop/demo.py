"""GalLoP vs CoOp vs zero-shot CLIP on cluttered few-shot Fashion-MNIST scenes, with GL-MCM OOD scores and local
heatmaps: ``python -m gallop.demo [--out outputs/demo] [--seeds 1,2,3] [<hydra overrides>]`` (``make demo-gallop``).

The three methods are launcher rows, ``configs/experiment/gallop/demo_scenes_{zeroshot,coop,gallop}.yaml`` (setting
in ``demo_scenes_base.yaml``; :mod:`gallop.scene_study` describes the task): the committed small CLIP that the repo
trains itself (``gallop/assets/tiny_clip_fmnist``, ``make weights-tiny-clip``), 16 shots per ID class, the few-shot
seeds 1, 2, 3 (CoOp's protocol). One Hydra multirun per row over the seeds (zero-shot CLIP is seed-free: it runs for
the first seed and stands for every seed); each run writes its result record (table ``demo``, ``<out>/records``) and
logs to wandb (offline unless WANDB_MODE=online). This script reads the records back and writes ``<out>/gallop.json``
(all numbers, the table, the three verdicts), ``<out>/gallop.md``, ``<out>/gallop_heatmaps.png`` (GalLoP's local
heatmaps, last seed) and ``<out>/artifacts/gallop_curve_{coop,gallop}.csv`` (training loss per step, first seed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from common.demo import DEFAULT_OUT, FEWSHOT_SEEDS, demo_records, launch, parse_seeds, run_dirs
from common.report.artifacts import export_loss_curve
from gallop import scene_study

#: record row -> (experiment, method name of the summary)
ROWS = {
    "zeroshot_clip": ("gallop/demo_scenes_zeroshot", "zero-shot CLIP"),
    "coop": ("gallop/demo_scenes_coop", "CoOp"),
    "gallop": ("gallop/demo_scenes_gallop", "GalLoP"),
}


def headline(d: dict) -> dict:
    """The row of ``make demo``'s headline table (``common.demo.HEADLINE_COLUMNS``) from the demo's payload."""
    top1 = {r["method"]: r["top1"] for r in d["table"] if r["kind"] == "top1"}
    ours = "GalLoP {:.1f} ± {:.1f}".format(*top1["GalLoP (global + local)"])
    names = ("zero-shot CLIP", "CoOp", "GalLoP global-only")
    base = ", ".join("{} {:.1f} ± {:.1f}".format(n, *top1[n]) for n in names)
    short = ("GalLoP > CoOp", "local prompts help", "GL-MCM > MCM (AUROC)")
    said = [
        f"{s}: {'holds' if v['holds'] else 'does NOT hold'}" for s, v in zip(short, d["verdicts"]["headline"].values())
    ]
    verdict = "; ".join(said) + f" ({len(d['seeds'])} seeds, cluttered scenes, the repo's small CLIP)"
    return {"task": "Prompts", "metric": "top-1 %", "ours": ours, "baselines": base, "verdict": verdict}


def runs_from_records(records: list, seeds: list[int]) -> dict[str, dict[int, dict[str, float]]]:
    """``{method: {seed: metrics}}`` with the launcher's metric names (``test/...``; diagnostics ``diag/...``); the
    seed-free zero-shot run stands for every seed."""
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for row, (_, method) in ROWS.items():
        per = {r.seed: r.metrics for r in records if r.row == row}
        if row == "zeroshot_clip":
            per = {s: next(iter(per.values())) for s in seeds}
        runs[method] = {s: {(k if k.startswith("diag/") else f"test/{k}"): v for k, v in per[s].items()} for s in seeds}
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where gallop.json/.md, records and runs go")
    parser.add_argument("--seeds", default=FEWSHOT_SEEDS, help="few-shot seeds, comma-separated (CoOp's 1,2,3)")
    args, overrides = parser.parse_known_args(argv)
    out, seeds = Path(args.out), parse_seeds(args.seeds)
    start = time.perf_counter()
    sweep_dir, zeroshot = launch([ROWS["zeroshot_clip"][0]], seeds[:1], out, "gallop", overrides)
    _, trained = launch([ROWS["coop"][0], ROWS["gallop"][0]], seeds, out, "gallop", overrides)
    wall = time.perf_counter() - start
    records = [r for r in demo_records(out, "gallop") if r.seed in seeds]
    wanted = [("zeroshot_clip", seeds[0])] + [(row, s) for row in ("coop", "gallop") for s in seeds]
    missing = [(row, s) for row, s in wanted if not any(r.row == row and r.seed == s for r in records)]
    if missing:
        raise RuntimeError(f"no result record for {missing} under {out / 'records'}")
    jobs = run_dirs(sweep_dir)
    for row in ("coop", "gallop"):  # training loss per step, first seed
        export_loss_curve(jobs[(row, seeds[0])], out / "artifacts", "gallop", row)
    shutil.copyfile(jobs[("gallop", seeds[-1])] / "scenes_heatmaps.png", out / "gallop_heatmaps.png")
    configs = {
        method: OmegaConf.to_container(OmegaConf.load(jobs[(row, seeds[0])] / "config_resolved.yaml"))
        for row, (_, method) in ROWS.items()
    }
    runs = runs_from_records(records, seeds)
    setting = scene_study.setting_of(configs)
    clip = scene_study.clip_info(configs["GalLoP"]["scenes"]["clip_dir"])
    command = f"{zeroshot}; {trained}"
    payload = {
        "study": "gallop_scenes",
        "command": command,
        "seeds": seeds,
        "setting": setting,
        "clip": clip,
        "runs": {m: {str(s): v for s, v in r.items()} for m, r in runs.items()},
        "table": scene_study.table_rows(runs),
        "verdicts": scene_study.verdicts(runs),
        "heatmaps": "gallop_heatmaps.png",
        "wall_seconds": wall,
    }
    payload["headline"] = headline(payload)
    md = scene_study.markdown(runs, setting, seeds, command, clip, payload["heatmaps"], wall)
    (out / "gallop.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "gallop.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
