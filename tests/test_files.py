"""phi3_aipc.files: links where the platform allows them, and sizes on disk without st_blocks
(which Windows lacks)."""
import os

import pytest

from phi3_aipc import files
from phi3_aipc.files import allocated_bytes, disk_bytes, link_or_copy


def refuse(*args, **kwargs):
    raise OSError(22, "not allowed here")


def test_link_or_copy_links_where_allowed_and_copies_where_not(tmp_path, monkeypatch):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\1" * 5000)
    made = [link_or_copy(source, tmp_path / "a")]
    # Windows without Developer Mode: WinError 1314, then a hard link
    monkeypatch.setattr(files.os, "symlink", refuse)
    made.append(link_or_copy(source, tmp_path / "b"))
    monkeypatch.setattr(files.os, "link", refuse)  # and where neither is possible: a copy
    made.append(link_or_copy(source, tmp_path / "c"))
    assert made[1:] == ["hardlink", "copy"]
    assert made[0] == "symlink" or os.name == "nt"  # Windows: "hardlink" without Developer Mode
    assert all((tmp_path / n).read_bytes() == source.read_bytes() for n in "abc")
    with pytest.raises(FileExistsError):
        link_or_copy(source, tmp_path / "c")


def test_disk_bytes_counts_each_file_once_and_follows_no_link(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    data = folder / "data.bin"
    data.write_bytes(os.urandom(100_000))
    one = disk_bytes(folder)
    assert one == allocated_bytes(os.lstat(data)) and one >= 100_000 - 4096
    os.link(data, folder / "again.bin")  # a hard link: the same bytes on disk
    if os.name != "nt":  # a symbolic link (on Windows only with Developer Mode): not followed
        (folder / "link.bin").symlink_to(data)
    assert disk_bytes(folder) == one
    assert disk_bytes(folder, folder) == one  # across the folders given too


def test_allocated_bytes_falls_back_to_the_size_without_blocks():
    class WindowsStat:  # os.stat_result on Windows has no st_blocks
        st_size = 1234
    assert allocated_bytes(WindowsStat()) == 1234
