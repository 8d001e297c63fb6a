import os
import stat

import pytest

from nlu import OutputError, atomic
from nlu.atomic import check_can_create, make_dirs, write_atomic


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
    with pytest.raises(OutputError, match="metrics.json: cannot write: disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{tmp}/folder", "folder: is a directory; name a file"),
        ("{tmp}/file.txt/x", "file.txt/x: cannot write: Not a directory"),
        ("/proc/nlu-x", "/proc/nlu-x: cannot write"),
    ],
)
def test_atomic_os_failure_is_an_output_error_naming_the_path(tmp_path, target, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("old")
    with pytest.raises(OutputError, match=message):
        write_atomic(target.replace("{tmp}", str(tmp_path)), b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder"]


def test_atomic_check_can_create_probes_without_leaving_anything(tmp_path):
    check_can_create(tmp_path / "a" / "b" / "c")  # missing folders are fine: they can be made
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match=r"file.txt is not a directory"):
        check_can_create(tmp_path / "file.txt" / "c")
    with pytest.raises(OutputError, match=r"cannot write in /proc"):
        check_can_create("/proc/nlu/model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_atomic_make_dirs_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="file.txt: exists and is not a directory"):
        make_dirs(tmp_path / "file.txt")
