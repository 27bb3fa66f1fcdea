"""What the tests need done the same way on Linux, macOS and Windows (`py -3.11
scripts/bootstrap.py test` runs them there too). The runtime's own helpers are in
phi3_aipc.processes (`own_group`, `end_tree`: a child and all it started, killed) and
phi3_aipc.files (`link_or_copy`, `disk_bytes`). tests/test_portable_lint.py refuses the POSIX-only
ways outside a POSIX-only branch or test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from phi3_aipc.files import link_or_copy


def cli() -> str:
    """The installed `phi3-aipc` console script (phi3-aipc.exe on Windows, which CreateProcess
    finds without its extension)."""
    return os.path.join(os.path.dirname(sys.executable), "phi3-aipc")


def link_files(source: Path, target: Path) -> None:
    """Every file directly in `source` made visible in the folder `target` (which must exist) by
    a link, or a copy where Windows allows no symbolic link (see `link_or_copy`)."""
    for f in source.iterdir():
        if f.is_file():
            link_or_copy(f, target / f.name)


def unmakeable_folder(tmp_path: Path) -> str:
    """A folder nobody can make, administrators and root included: one under /proc on POSIX,
    one whose name has characters Windows refuses (WinError 123) on Windows."""
    if os.name == "nt":
        return str(tmp_path / "no<such>folder")
    else:
        return "/proc/no-such-folder"


def first_line_then_close(cmd: list[str], timeout: float) -> tuple[str, str]:
    """Run `cmd`, read the first line of its output and close the pipe, as `cmd | head -1` does
    (without a shell); returns (that line, everything it wrote to stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace")
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        line = proc.stdout.readline()
        proc.stdout.close()  # the reader has gone
        proc.wait(timeout)
        reader.join(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return line, "".join(err)
