"""Atomic writes: all or nothing, with the modes the umask gives."""

import errno
import os
import stat
import subprocess
import sys

import pytest

from experiment_helpers import with_file_size_limit
from rso_jax.runtime import atomic_io
from t5_helpers import REPO_ROOT


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_directories_get_the_modes_of_the_umask(tmp_path, umask_027):
    atomic_io.write_json(str(tmp_path / "a.json"), {"x": 1})
    with atomic_io.directory(str(tmp_path / "d")) as temp_dir:
        atomic_io.write_text(os.path.join(temp_dir, "inner.txt"), "y")
    plain = tmp_path / "plain.txt"
    plain.write_text("z")  # what open() gives under the same umask
    assert _mode(tmp_path / "a.json") == _mode(plain) == 0o640
    assert _mode(tmp_path / "d") == 0o750
    assert _mode(tmp_path / "d" / "inner.txt") == 0o640
    os.umask(0o022)
    atomic_io.write_text(str(tmp_path / "b.txt"), "w")
    assert _mode(tmp_path / "b.txt") == 0o644


def test_a_failed_directory_write_leaves_the_old_one_and_no_temporary(tmp_path):
    target = tmp_path / "out"
    with atomic_io.directory(str(target)) as temp_dir:
        atomic_io.write_text(os.path.join(temp_dir, "v"), "1")
    with pytest.raises(RuntimeError):
        with atomic_io.directory(str(target)) as temp_dir:
            atomic_io.write_text(os.path.join(temp_dir, "v"), "2")
            raise RuntimeError("killed")
    assert (target / "v").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_leftovers_of_killed_writes_are_found_and_only_they(tmp_path):
    import tempfile
    keep = [tmp_path / ".hidden_by_the_user", tmp_path / "params" / "data"]
    keep[1].parent.mkdir()
    for path in keep:
        path.write_text("keep")
    # What a kill between the write and the rename leaves: a temporary file and directory.
    leftover_file = tempfile.mkstemp(dir=tmp_path, prefix=atomic_io._temporary_prefix(
        str(tmp_path / "pairs.npz")))[1]
    leftover_dir = tempfile.mkdtemp(dir=tmp_path / "params", prefix=atomic_io._temporary_prefix(
        str(tmp_path / "params" / "best")))
    removed = atomic_io.remove_leftovers(str(tmp_path))
    assert sorted(removed) == sorted([leftover_file, leftover_dir])
    assert not os.path.exists(leftover_file) and not os.path.exists(leftover_dir)
    assert all(path.read_text() == "keep" for path in keep)


def test_a_write_that_fails_names_the_file_and_leaves_nothing(tmp_path):
    """A write past the file size limit (as on a full disk, the operating system's error names
    no file) raises an OSError naming the destination; neither it nor a temporary file is
    left."""
    path = tmp_path / "results.json"
    script = ("import sys\nfrom rso_jax.runtime import atomic_io\ntry:\n"
              f"    atomic_io.write_text({str(path)!r}, 'x' * 10000)\n"
              "except OSError as error:\n    print(error.errno, error.filename)\n")
    result = subprocess.run(with_file_size_limit([sys.executable, "-c", script], 4),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == [str(errno.EFBIG), str(path)], result.stderr
    assert os.listdir(tmp_path) == []
