"""Which Python environment has which route: the main .venv, and .venv-npu for the NPU library.

The archived NPU Acceleration Library pins numpy<2 and an old OpenVINO, so scripts/bootstrap.py
gives it an environment of its own beside .venv; the other routes reach it through a subprocess.
"""
from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IS_WINDOWS = sys.platform == "win32"


def env_python(name: str) -> Path:
    """The interpreter of the environment folder `name` at the repository root."""
    return ROOT / name / ("Scripts/python.exe" if IS_WINDOWS else "bin/python")


def main_python() -> str:
    """The main environment's Python (OpenVINO, ORT GenAI, transformers): .venv, or this one."""
    exe = env_python(".venv")
    return str(exe) if exe.exists() else sys.executable


def npu_library_python() -> str | None:
    """A Python that has the NPU library: this one, or .venv-npu's; None if neither."""
    if importlib.util.find_spec("intel_npu_acceleration_library") is not None:
        return sys.executable
    exe = env_python(".venv-npu")
    return str(exe) if exe.exists() else None


def installed_version(package: str) -> str | None:
    """The installed version of a package by its pip name, or None."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None
