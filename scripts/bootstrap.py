"""Create or update the project's environment (.venv), then run a task in it.

    python scripts/bootstrap.py demo     # the main job: every installed route once
    python scripts/bootstrap.py test     # the whole test suite (pytest + nbval)
    python scripts/bootstrap.py setup    # only the environment
    python scripts/bootstrap.py lab      # JupyterLab on notebooks/

Only the standard library is used here, so any Python 3.10-3.12 can run it. Installing is
skipped when pyproject.toml and this script are unchanged since the last successful setup.
Set PHI3_AIPC_TORCH_INDEX to a package index URL to take torch from there (on Linux, PyTorch's
CPU-only index: the default Linux wheel is the multi-gigabyte CUDA build).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / "phi3-aipc-setup.txt"
TORCH = "torch==2.13.0"  # installed first, so nothing else pulls a CUDA build


def fingerprint() -> str:
    h = hashlib.sha256(sys.version.encode())
    for f in ("pyproject.toml", "scripts/bootstrap.py"):
        h.update((ROOT / f).read_bytes())
    return h.hexdigest()


def pip(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check",
                    *args], check=True, cwd=ROOT)


def setup() -> None:
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    if STAMP.exists() and STAMP.read_text() == fingerprint():
        return
    print("Installing the project into .venv (first time: a few minutes) ...", flush=True)
    pip("--upgrade", "pip")
    index = os.environ.get("PHI3_AIPC_TORCH_INDEX")
    pip(TORCH, *(["--index-url", index] if index else []))
    pip("-e", ".[all]")
    STAMP.write_text(fingerprint())


def main(argv: list[str]) -> int:
    task, extra = (argv[0] if argv else "setup"), argv[1:]
    commands = {
        "setup": None,
        "demo": [str(BIN / "phi3-aipc"), "demo", *extra],
        "test": [str(PYTHON), "-m", "pytest", *extra],
        "lab": [str(BIN / "jupyter"), "lab", "notebooks", *extra],
    }
    if task not in commands:
        print(f"Unknown task {task!r}; use one of {', '.join(commands)}.", file=sys.stderr)
        return 2
    setup()
    if commands[task] is None:
        return 0
    return subprocess.run(commands[task], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
