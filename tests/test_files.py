"""The one atomic-write helper and the output lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from autoscale_env.world.files import OutputLocked, PathLock, atomic_write, atomic_writer


def test_an_interrupted_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "model.bin"
    atomic_write(path, b"old")

    def torn(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, torn)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_text_bytes_and_writer_functions_land_whole_with_the_umask_mode(tmp_path):
    atomic_write(tmp_path / "a.txt", "é\n")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    with atomic_writer(tmp_path / "c.bin") as f:
        assert os.path.basename(f.name).startswith(".c.bin.")  # a real path, beside the target
        f.write(b"c")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "é\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    umask = os.umask(0o022)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "c.bin").stat().st_mode)
    assert mode == 0o666 & ~umask  # as open() would have made it, not mkstemp's 0600


def test_a_lock_is_shared_within_a_process_and_refused_to_another(tmp_path):
    with PathLock(tmp_path, inside=True), PathLock(tmp_path, inside=True):
        other = subprocess.run(
            [sys.executable, "-c", "from autoscale_env.world.files import PathLock; "
             f"PathLock({str(tmp_path)!r}, inside=True).acquire()"],
            capture_output=True, text=True, timeout=60)
        assert other.returncode != 0
        assert "OutputLocked" in other.stderr and f"process {os.getpid()}" in other.stderr
    assert not (tmp_path / ".lock").exists()
    PathLock(tmp_path, inside=True).acquire().release()  # free again


def test_output_locked_is_an_autoscale_error():
    from autoscale_env.world.errors import AutoScaleError
    assert issubclass(OutputLocked, AutoScaleError)
