"""A per-run lock: at most one process trains a run folder at a time.

The lock is ``run_dir/.lock``, held with ``flock`` for as long as the run executes and holding
the owner's PID, host and start time (for the message the second process prints). The kernel
releases an ``flock`` when its owner dies, however it dies (``kill -9`` included), so a lock
left behind by a dead process is stale by construction and the next run takes it over; no
PID guessing is needed on the machine that holds it.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "lock_owner"]

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run's lock (it is training that run now)."""


def _describe(owner: dict[str, Any]) -> str:
    pid, host = owner.get("pid", "?"), owner.get("host", "?")
    since = owner.get("since", "?")
    return f"pid {pid} on host {host} (since {since})"


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        owner = json.loads(data) if data else {}
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """``with RunLock(run_dir):`` holds the run's lock; raises :class:`RunLockedError` at once
    (it never waits) when another live process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self.stale_owner: dict[str, Any] = {}
        """The owner recorded by a previous holder that died without releasing (else empty)."""

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is being trained by {_describe(owner)}; "
                "not started here (run the command again after that process ends)"
            ) from None
        self.stale_owner = _read_owner(fd)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file: nobody holds it
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_owner(run_dir: Path) -> dict[str, Any] | None:
    """The owner record of a run's lock while a live process holds it, else None."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
