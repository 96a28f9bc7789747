"""Read an offline wandb run (``run-<id>.wandb``) back: config, history rows and summary.

Offline runs keep everything in the ``.wandb`` record log until ``wandb sync``; the launcher test reads it here,
without network.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


# The record log is LevelDB's log format behind a 7-byte file header (":W&B", magic 0xBEE1, version 0): 32 KiB
# blocks of records, each with a 7-byte header (crc32 u32, length u16, type u8); a record that does not fit is split
# into FIRST/MIDDLE/LAST fragments, and a block tail shorter than a header is zero padding.
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(data: bytes):
    """Yield the raw protobuf payloads stored in a ``.wandb`` file's bytes."""
    if data[:4] != b":W&B":
        raise ValueError("not a wandb record log (missing ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            break
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """Parse a ``.wandb`` file (or the offline run folder holding one) into ``{config, history, summary, run}``."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.wandb"))
        if not found:
            raise FileNotFoundError(f"no .wandb file in {path}")
        path = found[0]
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run": {}}
    for data in iter_records(path.read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            r = rec.run
            out["run"] = {
                "project": r.project,
                "group": r.run_group,
                "job_type": r.job_type,
                "name": r.display_name,
                "tags": list(r.tags),
            }
            out["config"].update({_key(i): json.loads(i.value_json) for i in r.config.update})
    last: dict[str, Any] = {}
    for row in out["history"]:
        last.update(row)
    out["summary"] = {**last, **out["summary"]}
    return out
