"""Run-folder storage: atomic writes, the append-only metrics log and its repair."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repro import storage
from repro.storage import (
    MetricsWriter,
    atomic_write_json,
    check_row,
    read_metrics,
    repair_metrics,
    run_dir_for,
    run_state,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "summary.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_atomic_write_failure_keeps_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.json"
    atomic_write_json(path, {"old": True})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # temp file removed
    with pytest.raises(TypeError):  # not serialisable: fails before touching the file
        atomic_write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == {"old": True}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"step": 1}\n{"step": 2}\n', b'{"step": 1}\n{"step": 2}\n'),
        (b'{"step": 1}\n{"step": 2, "lo', b'{"step": 1}\n'),
        (b'{"step": 1}\n{"step": 2, "lo\n', b'{"step": 1}\n'),
        (b'{"ste', b""),
        (b"", b""),
    ],
)
def test_repair_metrics_drops_only_a_torn_last_line(
    tmp_path: Path, content: bytes, expected: bytes
) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    assert repair_metrics(path) == len(content) - len(expected)
    assert path.read_bytes() == expected


def test_metrics_writer_appends_flushes_and_drops_replayed_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        assert w.append({"step": 1, "loss": 0.5})
        assert w.append({"step": 3, "loss": 0.25, "tag": "x"})
        # flushed per row: another reader sees it before close
        assert [r["step"] for r in read_metrics(path)] == [1, 3]
    with open(path, "ab") as f:
        f.write(b'{"step": 4, "lo')  # torn by a kill
    w2 = MetricsWriter(path)
    assert (w2.last_step, w2.rows) == (3, 2)
    assert w2.final == {"step": 3, "loss": 0.25, "tag": "x"}
    assert not w2.append({"step": 2, "loss": 9.0})  # replayed after resume: dropped
    assert not w2.append({"step": 3, "loss": 9.0})
    assert w2.append({"step": 4, "loss": 0.125})
    w2.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 3, 4]
    assert path.read_text().endswith("\n")


def test_check_row_rejects_bad_rows() -> None:
    with pytest.raises(TypeError, match="dict"):
        check_row([("step", 1)], None)
    with pytest.raises(ValueError, match="int 'step'"):
        check_row({"loss": 1.0}, None)
    with pytest.raises(ValueError, match="int 'step'"):
        check_row({"step": 1.5}, None)
    with pytest.raises(ValueError, match="strictly increase"):
        check_row({"step": 2}, 2)
    with pytest.raises(TypeError, match="'loss'"):
        check_row({"step": 1, "loss": [1.0]}, None)
    row = {"step": 1, "loss": 1.0}
    assert check_row(row, 0) == row and check_row(row, 0) is not row


def test_run_dir_and_state(tmp_path: Path) -> None:
    d = run_dir_for(tmp_path, "exp", "cfg", 3)
    assert d == tmp_path / "exp" / "cfg" / "seed-3"
    with pytest.raises(ValueError, match="seed"):
        run_dir_for(tmp_path, "exp", "cfg", -1)
    with pytest.raises(ValueError, match="config_name"):
        run_dir_for(tmp_path, "exp", "a/b", 0)
    assert run_state(d).status == "new"
    atomic_write_json(d / "config.json", {"seed": 3})
    assert run_state(d).status == "incomplete"
    atomic_write_json(d / "summary.json", {"status": "failed"})
    assert run_state(d).status == "failed"
    assert sorted(os.listdir(d)) == ["config.json", "summary.json"]


def test_atomic_write_gives_a_normal_file_mode(tmp_path: Path) -> None:
    import stat

    target = tmp_path / "report.md"
    storage.atomic_write_text(target, "hello\n")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert target.read_text() == "hello\n"
