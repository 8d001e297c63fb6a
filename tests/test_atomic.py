import os
import stat

import pytest

from nlu import atomic
from nlu.atomic import write_atomic


def test_atomic_new_file_is_world_readable(tmp_path):
    path = write_atomic(tmp_path / "a.json", b"{}")
    assert path.read_bytes() == b"{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_replacement_keeps_permissions(tmp_path):
    path = tmp_path / "nlu.toml"
    path.write_text("old")
    path.chmod(0o600)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_failure_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["metrics.json"]
