"""`python -m common.demo` runs its parts side by side (--jobs): every part runs, its output lands in its log, a failed
part is reported with its last lines, and the summary names every part's time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from common import demo


def _fake_parts(monkeypatch: pytest.MonkeyPatch, fail: str | None = None) -> None:
    """Each part is a tiny python process that prints its name (and exits 3 when it is ``fail``)."""

    def command(method: str, out: Path, seeds: str, overrides: list[str]) -> list[str]:
        code = f"import sys; print('part {method} seeds {seeds}'); sys.exit(3 if {method!r} == {fail!r} else 0)"
        return [sys.executable, "-c", code]

    monkeypatch.setattr(demo, "part_command", command)


def test_parts_side_by_side_each_write_their_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _fake_parts(monkeypatch)
    ended = demo.run_parts(["roadmap", "happier", "multilabel"], tmp_path, "0,1", [], jobs=2)
    assert {m: rc for m, (rc, _) in ended.items()} == {"roadmap": 0, "happier": 0, "multilabel": 0}
    for method in ("roadmap", "happier", "multilabel"):
        assert (tmp_path / "logs" / f"{method}.log").read_text().strip() == f"part {method} seeds 0,1"
    printed = capsys.readouterr().out
    # the most expensive part starts first
    assert printed.index("happier demo: started") < printed.index("multilabel demo: started")
    assert "3/3 parts done" in printed


def test_one_job_streams_in_the_given_order_and_writes_no_log(tmp_path: Path, monkeypatch, capfd) -> None:
    _fake_parts(monkeypatch)
    demo.run_parts(["multilabel", "roadmap"], tmp_path, "0", [], jobs=1)
    printed = capfd.readouterr().out
    assert printed.index("part multilabel") < printed.index("part roadmap")
    assert not (tmp_path / "logs").exists()


def test_a_failed_part_is_reported_with_its_last_lines_and_main_exits_1(tmp_path, monkeypatch, capsys) -> None:
    _fake_parts(monkeypatch, fail="heat")
    rc = demo.main(["--out", str(tmp_path), "--only", "roadmap", "heat", "--jobs", "2"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "heat: FAILED (exit 3)" in captured.out and "roadmap: ok" in captured.out
    assert "heat| part heat seeds 0,1,2" in captured.err
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "2 at a time" in summary and "roadmap" in summary and "heat" in summary


def test_jobs_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--jobs", "0"])


def test_overrides_reach_the_launcher_demos_and_the_others_are_named(tmp_path: Path, monkeypatch, capsys) -> None:
    seen: dict[str, list[str]] = {}
    real = demo.part_command

    def command(method: str, out: Path, seeds: str, overrides: list[str]) -> list[str]:
        seen[method] = real(method, out, seeds, overrides)
        return [sys.executable, "-c", "pass"]

    monkeypatch.setattr(demo, "part_command", command)
    rc = demo.main(["--out", str(tmp_path), "--only", "roadmap", "heat", "--jobs", "1", "trainer.max_epochs=1"])
    assert rc == 0
    assert "trainer.max_epochs=1" in seen["roadmap"] and "trainer.max_epochs=1" not in seen["heat"]
    err = capsys.readouterr().err
    assert "go to roadmap only; heat run as configured" in err and "make demo-heat ARGS=..." in err
