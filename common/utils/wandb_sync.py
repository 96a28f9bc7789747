"""``make wandb-sync``: upload the offline wandb runs that the launcher left under ``logs/``.

Runs log offline when no API key is found (see ``configs/logger/wandb.yaml``); each run folder then holds
``wandb/offline-run-<date>-<id>/``. This command finds every such folder under the given roots, skips those that
wandb already marked as synced (``run-<id>.wandb.synced``), and passes the rest to one ``wandb sync`` call. Its exit
status is wandb's: a failed upload (no ``wandb login``, no network) fails the command instead of being ignored.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def offline_runs(roots: list[Path], include_synced: bool = False) -> list[Path]:
    """Every ``offline-run-*`` folder under ``roots`` (sorted), without the already-synced ones unless asked."""
    runs: set[Path] = set()
    for root in roots:
        for run in root.rglob("offline-run-*"):
            if not run.is_dir():
                continue
            synced = any(run.glob("*.wandb.synced"))
            if include_synced or not synced:
                runs.add(run)
    return sorted(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.utils.wandb_sync", description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("logs")], help="folders to search (default: logs)")
    parser.add_argument("--wandb", default=None, help="the wandb executable (default: the one beside this Python)")
    parser.add_argument("--include-synced", action="store_true", help="upload runs that were synced before, too")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    args = parser.parse_args(argv)

    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        print(f"wandb-sync: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = offline_runs(args.roots, include_synced=args.include_synced)
    where = ", ".join(str(r) for r in args.roots)
    if not runs:
        print(f"wandb-sync: no unsynced offline runs under {where}")
        return 0
    print(f"wandb-sync: {len(runs)} offline run(s) under {where}")
    for run in runs:
        print(f"  {run}")
    if args.dry_run:
        return 0
    exe = args.wandb or str(Path(sys.executable).with_name("wandb"))
    if shutil.which(exe) is None:
        print(f"wandb-sync: wandb executable not found at {exe}; install the project (make install)", file=sys.stderr)
        return 2
    code = subprocess.run([exe, "sync", *map(str, runs)], check=False).returncode
    if code != 0:
        print(
            f"wandb-sync: `wandb sync` failed (exit {code}); nothing was marked as synced. "
            "Run `wandb login` (or set WANDB_API_KEY) and check the network, then run `make wandb-sync` again.",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
