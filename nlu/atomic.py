"""Writing a file so that readers see the old contents or the new, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` that names the path when it fails (a file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: exists and is not a directory") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder: {exc.strerror or exc}") from None
    return path


def check_can_create(path: str | Path) -> None:
    """Fail now, before any work, when ``path`` could not be created: its nearest existing
    ancestor is a file, or creating anything in it is refused (a real probe: permission
    bits say nothing for root or a read-only mount)."""
    path = Path(path)
    ancestor = next(p for p in path.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise OutputError(f"{path}: {ancestor} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nlu-probe.", dir=ancestor))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {ancestor}: {exc.strerror or exc}") from None


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a hidden temporary sibling, fsynced, then renamed
    over the target (``os.replace`` is atomic on one filesystem). A crash or an error
    leaves the old file as it was and no temporary behind. A replaced file keeps its
    permissions; a new one is 0644 (``mkstemp`` would make it private). An OS failure
    (no permission, disk full, a folder in the way) is an :class:`OutputError`."""
    path = Path(path)
    try:
        _replace_with(path, data)
    except IsADirectoryError:
        raise OutputError(f"{path}: is a directory; name a file") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def _replace_with(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
