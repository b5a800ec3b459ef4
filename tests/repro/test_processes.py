"""Fault injection on the local backend: the driver killed (SIGKILL, SIGTERM, Ctrl-C), a worker
killed, two drivers on the same runs. Each compares the resumed runs with an uninterrupted
reference. Waits poll for a state (never a wall-clock limit on the code under test); the
generous ``_WAIT_S`` only turns a hang into a failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from repro.cli import main
from repro.locks import LOCK_FILE, RunLock, lock_owner
from repro.storage import read_metrics, run_state

REPO = Path(__file__).resolve().parents[2]
_WAIT_S = 120.0

_DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from tests.repro.toy_experiments import register
register()
from repro.cli import main
sys.exit(main({argv!r}))
"""


def _wait_for(condition: Callable[[], bool], what: str, wait_s: float = _WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _sigint_default() -> None:
    """In the child before exec: Ctrl-C as a terminal-started process has it. An ignored SIGINT
    stays ignored across exec (then Python keeps ignoring it), and the pytest worker that starts
    the driver may have inherited or been left with an ignored SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _driver(argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
    code = _DRIVER.format(repo=str(REPO), argv=argv)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_default,
        **kw,
    )


def _worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    return [
        c.pid
        for c in psutil.Process(proc.pid).children(recursive=True)
        if "resource_tracker" not in " ".join(c.cmdline())
    ]


def _argv(out: Path, *extra: str, sleep_s: float = 0.03) -> list[str]:
    """The reference's runs, slowed by ``sleep_s`` per row so that a test can stop them mid-way."""
    sets = ["total_steps=40", "checkpoint_every=7", f"sleep_s={sleep_s}"]
    return ["run", "toy", "--seeds", "0-1", "--set", *sets, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted runs, in this process."""
    ref = tmp_path_factory.mktemp("ref")
    sets = ["--set", "total_steps=40", "checkpoint_every=7"]
    argv = ["run", "toy", "--seeds", "0-1", *sets, "--workers", "1", "--no-progress"]
    assert main([*argv, "--no-tensorboard", "--out", str(ref)]) == 0
    return ref


def _assert_same_as_reference(out: Path, ref: Path) -> None:
    for config in ("small", "fast-lr"):
        for seed in (0, 1):
            rel = Path("toy", config, f"seed-{seed}", "metrics.jsonl")
            assert (out / rel).read_text() == (ref / rel).read_text(), rel
            assert run_state(out / rel.parent).status == "finished"


def test_killed_driver_takes_its_workers_along_and_rerun_trains_each_step_once(
    tmp_path: Path, reference: Path
) -> None:
    """Issue 16.1: SIGKILL of `repro run` left its pool workers training under PID 1."""
    out = tmp_path / "out"
    proc = _driver(_argv(out, "--workers", "2", "--no-progress"))
    first = out / "toy" / "small" / "seed-0" / "metrics.jsonl"
    _wait_for(lambda: _rows(first) >= 5, "the first run to log 5 rows")
    workers = _worker_pids(proc)
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    _wait_for(lambda: all(_gone(p) for p in workers), "the workers to die with their driver")
    # the dead worker's lock is released (by the kernel, once the last holder of its fd is gone)
    _wait_for(lambda: lock_owner(first.parent) is None, "the dead worker's lock to be released")
    assert main([*_argv(out, "--workers", "1", "--no-progress")]) == 0  # resume at once
    _assert_same_as_reference(out, reference)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_one_ctrl_c_or_sigterm_stops_cleanly(tmp_path: Path, reference: Path, how: str) -> None:
    """Issue 16.4: after SIGINT the sweep went on with queued runs; three gave a traceback."""
    out = tmp_path / "out"
    # its own session: SIGINT goes to the driver's whole process group, as a terminal sends it
    # 0.1 s per row: the sweep lasts >= 8 s, so on a loaded machine it cannot end before the signal
    proc = _driver(
        _argv(out, "--workers", "2", "--no-progress", sleep_s=0.1), start_new_session=True
    )
    first = out / "toy" / "small" / "seed-0" / "metrics.jsonl"
    _wait_for(lambda: _rows(first) >= 5, "the first run to log 5 rows")
    workers = _worker_pids(proc)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.terminate()
    _, err = proc.communicate()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"interrupted; run the same command again" in err
    assert all(_gone(p) for p in workers)
    started = [d for d in (out / "toy").glob("*/seed-*") if (d / "config.json").exists()]
    assert started and len(started) <= 2  # no queued run was started after the stop
    for d in started:
        assert run_state(d).status == "incomplete"  # no summary: it resumes next time
        log = (d / "metrics.jsonl").read_bytes()
        assert log == b"" or log.endswith(b"\n")  # closed, not torn
    assert main([*_argv(out, "--workers", "1", "--no-progress", sleep_s=0.1)]) == 0
    _assert_same_as_reference(out, reference)


def test_a_killed_worker_fails_its_run_only_and_a_new_worker_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.3: one `kill -9` of a worker failed all runs with BrokenProcessPool."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    argv = ["run", "toy", "--config", "small", "--seeds", "0-3", "--workers", "2", "--no-progress"]
    sets = ["--set", "total_steps=12", "die_seed=1"]
    assert main([*argv, *sets, "--out", str(ref)]) == 0
    capsys.readouterr()
    # seed 1's worker is SIGKILLed at step 8: four runs on two workers, one crash
    crash = [*argv, *sets, "die_at_step=8", "--out", str(out)]
    assert main(crash) == 1
    text = capsys.readouterr().out
    assert "3 finished, 0 skipped, 1 failed" in text
    assert "worker process died (killed by SIGKILL)" in text
    victim = out / "toy/small/seed-1"
    summary = json.loads((victim / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["last_step"] == 7
    assert "killed by SIGKILL" in summary["error"]
    for s in (0, 2, 3):  # the others ran to the end (two of them on the replacement worker)
        rel = f"toy/small/seed-{s}/metrics.jsonl"
        assert (out / rel).read_text() == (ref / rel).read_text()
    # the retry resumes the victim from its checkpoint (step 5) to the reference rows
    assert main(crash) == 0
    assert "1 finished, 3 skipped, 0 failed" in capsys.readouterr().out
    rel = "toy/small/seed-1/metrics.jsonl"
    assert (out / rel).read_text() == (ref / rel).read_text()


def test_second_driver_skips_a_run_that_another_live_process_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.2: two `repro run` on the same runs trained one run twice."""
    out = tmp_path / "out"
    held = out / "toy" / "small" / "seed-0"
    argv = ["run", "toy", "--set", "total_steps=6", "--out", str(out), "--no-progress"]
    with RunLock(held):  # this test process "trains" small/seed-0
        assert main([*argv, "--workers", "1"]) == 0
        text = capsys.readouterr().out
        assert "1 finished, 1 skipped, 0 failed" in text
        assert f"is being trained by pid {os.getpid()} on host" in text
        assert not (held / "metrics.jsonl").exists() and not (held / "config.json").exists()
        assert lock_owner(held) is not None and lock_owner(held)["pid"] == os.getpid()
    # a lock file left by a process that died (no flock held any more) is stale: taken over
    (held / LOCK_FILE).write_text(json.dumps({"pid": 999999999, "host": "gone", "since": "?"}))
    assert lock_owner(held) is None
    assert main([*argv, "--workers", "1"]) == 0
    assert "1 finished, 1 skipped, 0 failed" in capsys.readouterr().out  # fast-lr was done
    assert [r["step"] for r in read_metrics(held / "metrics.jsonl")] == list(range(1, 7))
