"""Files the same way on every platform: links where they are allowed, sizes on disk.

Windows lets a user make symbolic links only with Developer Mode on or as an administrator
(otherwise WinError 1314, "A required privilege is not held by the client"), and its os.stat
results have no st_blocks.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def link_or_copy(source: Path | str, target: Path | str) -> str:
    """Make `target` a file with `source`'s content: a symbolic link to it where allowed, else a
    hard link (no rights needed, same volume only), else a copy. Returns which was made:
    "symlink", "hardlink" or "copy". An existing `target` is an error, as for os.symlink.

    A link shares the file: writing through it changes `source`.
    """
    source, target = Path(source), Path(target)
    try:
        os.symlink(source, target)
        return "symlink"
    except FileExistsError:
        raise
    except (OSError, NotImplementedError):  # WinError 1314, or a file system without links
        pass
    try:
        os.link(source, target)
        return "hardlink"
    except FileExistsError:
        raise
    except OSError:  # another volume, or FAT
        if os.path.lexists(target):
            raise FileExistsError(17, "File exists", str(target)) from None
        shutil.copy2(source, target)
        return "copy"


def allocated_bytes(st: os.stat_result) -> int:
    """The disk space a file takes, from its (l)stat: its allocated blocks where the platform
    reports them (POSIX st_blocks, 512-byte units: a sparse file counts what it holds), else
    its size (Windows, whose stat has no blocks; its size is what Explorer shows as "Size")."""
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def disk_bytes(*folders: Path | str) -> int:
    """Bytes the files under `folders` take on disk (`allocated_bytes`): symbolic links are not
    followed, and a file with several hard links under them is counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISLNK(st.st_mode):
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += allocated_bytes(st)
    return total
