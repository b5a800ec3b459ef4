"""State on disk that must not be trusted blindly (issue 16, items 6-10): each bad file is named,
says what to do, changes nothing, and the other runs go on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.cli import main
from repro.storage import CorruptFileError, MetricsWriter, read_metrics, run_state

ARGV = ["run", "toy", "--seeds", "0-1", "--set", "total_steps=8", "--workers", "1", "--no-progress"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("total_steps=-5", "config 'small': total_steps must be >= 1, got -5"),
        ("total_steps=0", "config 'small': total_steps must be >= 1, got 0"),
        ("checkpoint_every=-3", "config 'small': checkpoint_every must be >= 1, got -3"),
    ],
)
def test_invalid_config_is_refused_before_any_folder_exists(
    bad: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "toy", "--set", bad, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # the corrected command then runs: nothing of the refused one is in its way
    assert main(["run", "toy", "--set", "total_steps=3", "--out", str(tmp_path / "out")]) == 0


def test_bad_out_is_one_error_up_front_and_seeds_are_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in [
        (a_file, f"--out {a_file} is not a folder"),
        (a_file / "sub", f"--out {a_file}/sub cannot be created: {a_file} is not a folder"),
        (Path("/proc/repro-out"), "--out /proc/repro-out: cannot write in /proc"),
    ]:
        assert main([*ARGV, "--workers", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("repro: error:") == 1 and message in err, err
    assert main([*ARGV[:3], "0-100000000", *ARGV[4:], "--out", str(tmp_path)]) == 2
    assert "asks for more than 10,000 seeds" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def _unfinish(out: Path, config: str, seed: int) -> Path:
    """Make a finished run incomplete again (as if killed before its summary); its folder."""
    run_dir = out / "toy" / config / f"seed-{seed}"
    (run_dir / "summary.json").unlink()
    return run_dir


def test_corrupt_middle_line_of_metrics_is_named_and_other_runs_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.7: a corrupt middle line was accepted and readers stopped there silently."""
    out = tmp_path / "out"
    assert main([*ARGV, "--out", str(out)]) == 0
    log = _unfinish(out, "small", 1) / "metrics.jsonl"
    _unfinish(out, "fast-lr", 0)
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"step": 3, "losses/ms\n'
    log.write_bytes(b"".join(lines))
    before = log.read_bytes()
    with pytest.raises(CorruptFileError, match=r"metrics.jsonl: line 3 is not a metric row"):
        list(read_metrics(log))
    with pytest.raises(CorruptFileError, match="line 3"):
        MetricsWriter(log)
    assert log.read_bytes() == before  # nothing repaired or truncated
    capsys.readouterr()
    assert main([*ARGV, "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "1 finished, 2 skipped, 1 failed" in text and "line 3 is not a metric row" in text
    assert "remove this run folder" in text
    assert log.read_bytes() == before and run_state(log.parent).status == "incomplete"


def test_missing_config_json_is_not_silently_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.8: a deleted config.json and a new --set resumed the old run under the new label."""
    out = tmp_path / "out"
    assert main([*ARGV, "--out", str(out)]) == 0
    run_dir = _unfinish(out, "small", 0)
    (run_dir / "config.json").unlink()
    before = _tree(run_dir)
    capsys.readouterr()
    argv = ["run", "toy", "--config", "small", "--set", "total_steps=8", "lr=0.5"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "holds a run's files but no config.json" in text and "restore it" in text
    assert _tree(run_dir) == before  # nothing overwritten, no config.json written


@pytest.mark.parametrize("name", ["config.json", "summary.json"])
@pytest.mark.parametrize("content", [b"", b'{"seed": 0, "tot'])
def test_corrupt_config_or_summary_is_named_and_other_runs_go_on(
    name: str, content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*ARGV, "--out", str(out)]) == 0
    bad = out / "toy" / "fast-lr" / "seed-1" / name
    bad.write_bytes(content)
    capsys.readouterr()
    code = main([*ARGV, "--out", str(out)])
    text = capsys.readouterr().out
    assert f"{bad} is empty or not valid JSON" in text
    what_to_do = "restore it" if name == "config.json" else "delete it and run the same command"
    assert what_to_do in text
    assert code == 1 and "0 finished, 3 skipped, 1 failed" in text
    if name == "summary.json":  # following the advice repairs it
        bad.unlink()
        assert main([*ARGV, "--out", str(out)]) == 0
        assert json.loads(bad.read_text())["status"] == "finished"


def test_truncated_checkpoint_is_named_and_other_runs_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.9: a truncated checkpoint.pt failed every retry with `OSError: [Errno 22]`."""
    out = tmp_path / "out"
    assert main([*ARGV, "--out", str(out)]) == 0
    ckpt = _unfinish(out, "small", 0) / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    capsys.readouterr()
    for _ in range(2):  # the same clear message on every retry
        assert main([*ARGV, "--out", str(out)]) == 1
        text = capsys.readouterr().out
        assert f"{ckpt} is truncated or corrupt" in text
        assert "0 finished, 3 skipped, 1 failed" in text
