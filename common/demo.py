"""``make demo``: run every method's demo on Fashion-MNIST, one after another, and gather their tables.

Each method ships ``<method>/demo.py`` (``python -m <method>.demo``), which writes ``results/demo/<method>.json`` and
``results/demo/<method>.md``. This runner times each part, prints a running summary, and writes
``results/demo/SUMMARY.md`` with every table and the command that made it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ("roadmap", "happier", "heat", "gallop")


def available(methods: tuple[str, ...] = DEMOS) -> list[str]:
    return [m for m in methods if (ROOT / m / "demo.py").exists()]


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
