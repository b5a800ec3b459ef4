"""One atomic file write for qa2c's checkpoints (the libraries do not import the runner)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it onto ``path``.

    Readers see the old file or the new one, never half of one; if ``write`` raises, the
    temporary file is removed and ``path`` is left as it was. ``suffix`` ends the temporary
    name (``np.savez`` appends ``.npz`` to a name that does not end with it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
