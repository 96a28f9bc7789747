"""``make demo``: run every method's demo on Fashion-MNIST, one after another, and gather their tables.

Each method ships ``<method>/demo.py`` (``python -m <method>.demo``), which writes ``results/demo/<method>.json`` and
``results/demo/<method>.md``. This runner times each part, prints a running summary, and writes
``results/demo/SUMMARY.md``: a headline table (:func:`headline`, one row per method: ours vs its baselines, with
the verdict against the paper's claim), then every table and the command that made it. The README's first screen
shows the same headline table (``tests/test_readme.py`` checks that it matches ``results/demo/``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ("roadmap", "happier", "heat", "gallop")


def available(methods: tuple[str, ...] = DEMOS) -> list[str]:
    return [m for m in methods if (ROOT / m / "demo.py").exists()]


def _load(out: Path, method: str) -> dict | None:
    path = out / f"{method}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _roadmap_row(d: dict) -> list[str]:
    runs = d["runs"]
    names = {"roadmap": "ROADMAP", "roadmap_smoothap": "Smooth-AP", "roadmap_triplet": "triplet"}
    ours = runs["roadmap"]["test/map@r"]
    others = [(names.get(k, k), v["test/map@r"]) for k, v in runs.items() if k != "roadmap"]
    best = max(v for _, v in others)
    word = "on par" if abs(ours - best) <= 0.01 else ("ahead" if ours > best else "behind")
    word += f" ({ours - best:+.3f} vs the best baseline, one seed)"
    base = ", ".join(f"{n} {v:.3f}" for n, v in others)
    return ["Retrieval", "mAP@R", f"ROADMAP {ours:.3f}", base, f"{word}; paper: ROADMAP > Smooth-AP"]


def _happier_row(d: dict) -> list[str]:
    h, r = d["runs"]["HAPPIER"]["metrics"], d["runs"]["ROADMAP"]["metrics"]
    holds = h["test/hap"] > r["test/hap"] and h["test/asi"] > r["test/asi"]
    ours = f"HAPPIER {100 * h['test/hap']:.1f} / {100 * h['test/asi']:.1f}"
    base = f"ROADMAP {100 * r['test/hap']:.1f} / {100 * r['test/asi']:.1f}"
    verdict = "claim holds" if holds else "claim does NOT hold"
    return ["Hierarchical", "H-AP / ASI", ours, base, f"{verdict}: higher H-AP and ASI than a binary loss"]


def _heat_row(d: dict) -> list[str]:
    res = d["results"]
    heat = next(k for k in res if k.startswith("HEAT ("))
    baselines = [k for k in ("MSP", "Energy", "Mahalanobis") if k in res] + [k for k in res if k.startswith("KNN")]
    best = {s: min(baselines, key=lambda k: res[k][s]["fpr95"]) for s in ("near", "far")}
    ours = f"HEAT {100 * res[heat]['near']['fpr95']:.1f} / {100 * res[heat]['far']['fpr95']:.1f}"
    base = "; ".join(f"{s}: {best[s]} {100 * res[best[s]][s]['fpr95']:.1f}" for s in ("near", "far"))
    beats = d.get("composition_beats_every_single_scorer", {})
    yes = [k.replace("_", " ").replace("fpr95", "FPR95").replace("auroc", "AUROC") for k, v in beats.items() if v]
    where = "on " + ", ".join(yes) + " only" if 0 < len(yes) < len(beats) else ("everywhere" if yes else "nowhere")
    holds = "holds" if beats and len(yes) == len(beats) else "does NOT hold"
    verdict = f"claim {holds}: the composition beats every single scorer {where}"
    return ["OOD (near / far)", "FPR95 (lower is better)", ours, f"best baseline {base}", verdict]


def _gallop_row(d: dict) -> list[str]:
    if d.get("study") == "gallop_scenes":  # no real CLIP weights: few-shot study on cluttered scenes, 3 seeds
        top1 = {r["method"]: r["top1"] for r in d["table"] if r["kind"] == "top1"}
        ours = "GalLoP {:.1f} ± {:.1f}".format(*top1["GalLoP (global + local)"])
        names = ("zero-shot CLIP", "CoOp", "GalLoP global-only")
        base = ", ".join("{} {:.1f} ± {:.1f}".format(n, *top1[n]) for n in names)
        short = ("GalLoP > CoOp", "local prompts help", "GL-MCM > MCM (AUROC)")
        said = [
            f"{s}: {'holds' if v['holds'] else 'does NOT hold'}"
            for s, v in zip(short, d["verdicts"]["headline"].values())
        ]
        seeds = len(d["seeds"])
        verdict = "; ".join(said) + f" ({seeds} seeds, cluttered scenes, the repo's small CLIP)"
        return ["Prompts", "top-1 %", ours, base, verdict]
    m = d["metrics"]
    acc = {k: v["test/acc"] for k, v in m.items()}
    ours = f"GalLoP {acc.get('GalLoP', float('nan')):.1f}"
    base = ", ".join(f"{k} {v:.1f}" for k, v in acc.items() if k != "GalLoP")
    return ["Prompts", "top-1 %", ours, base, "real CLIP weights, one seed"]


ROWS = {"roadmap": _roadmap_row, "happier": _happier_row, "heat": _heat_row, "gallop": _gallop_row}


def headline(out: Path) -> str:
    """One Markdown table, a row per method whose ``<method>.json`` exists: ours vs its baselines and the verdict."""
    lines = ["| task | metric | ours | baselines | verdict |", "|---|---|---|---|---|"]
    for method, row in ROWS.items():
        data = _load(out, method)
        if data is not None:
            lines.append("| " + " | ".join(row(data)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="run only these methods")
    parser.add_argument("--out", default=str(ROOT / "results" / "demo"), help="where the tables go")
    args = parser.parse_args(argv)
    methods = args.only or available()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    failed: list[str] = []
    for i, method in enumerate(methods, 1):
        print(f"\n=== [{i}/{len(methods)}] {method} demo ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"{method}.demo", "--out", str(out)], cwd=ROOT)
        timings[method] = time.perf_counter() - start
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        if rc != 0:
            failed.append(method)
        done = ", ".join(f"{m} {t:.0f}s" for m, t in timings.items())
        print(f"=== {method}: {status} in {timings[method]:.0f}s | so far: {done}", flush=True)
    lines = ["# Demo results (Fashion-MNIST, CPU)", "", "Made by `make demo`; each section names its own command.", ""]
    lines += [headline(out), ""]
    for method in methods:
        md = out / f"{method}.md"
        if md.exists():
            lines += [md.read_text().strip(), ""]
    lines.append("Wall time per part: " + ", ".join(f"{m} {t:.0f} s" for m, t in timings.items()))
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    if failed:
        print(f"demo parts failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
