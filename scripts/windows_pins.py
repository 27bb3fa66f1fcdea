"""Resolve the Windows requirements of each environment with pip's dry run, from any OS.

    python scripts/windows_pins.py          # resolve each environment's list for win_amd64
    python scripts/windows_pins.py --list   # only print the requirement lists

The lists come from the project's own files, never from a copy: pyproject.toml (the
dependencies, plus the extras that `all` names, with their environment markers evaluated for
Windows) and scripts/bootstrap.py (TORCH, installed first into each environment; and, for
.venv-npu, NPU_DEPENDENCIES, NPU_BUILD_TOOLS and NPU_LIBRARY). A third list is the opt-in
Windows ML environment (`-e .[openvino,notebooks,test,winml]`: winml instead of onnx). The
project itself (`-e .`) is left out, but its dependencies are in every list, since each
environment installs it.
tests/test_windows_pins.py runs this on every CI run, so a pin that cannot install on Windows
fails there.

`pip install --dry-run --platform win_amd64` alone is not what pip does on Windows: --platform
only chooses wheels by their tags, while the environment markers in the packages' metadata are
still evaluated for the machine that runs pip (pip says so in its installation report's
`environment` field). On Linux, torch's win_amd64 wheel then asks for its Linux-only CUDA
packages (`nvidia-nccl-cu13==...; platform_system == "Linux"`), which have no Windows wheels,
and the resolution fails although torch installs fine on Windows. So pip runs here with the
marker environment of 64-bit CPython on Windows (WINDOWS_MARKERS), set in pip's own copy of
`packaging` before pip starts.

Only the standard library is needed, plus `packaging` (which pytest, and so the test
environment, has) to evaluate pyproject.toml's markers.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the copy of tomli that pip carries
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.11"  # the setup's (README: py -3.11); the NPU library has cp310-cp312 wheels
PLATFORM = "win_amd64"
# What packaging.markers.default_environment() returns in python.org's 64-bit CPython on Windows.
WINDOWS_MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": f"{PYTHON_VERSION}.9",
    "os_name": "nt",
    "platform_machine": "AMD64",
    "platform_python_implementation": "CPython",
    "platform_release": "10",
    "platform_system": "Windows",
    "platform_version": "10.0.26100",
    "python_full_version": f"{PYTHON_VERSION}.9",
    "python_version": PYTHON_VERSION,
    "sys_platform": "win32",
}
# Runs pip as `python -m pip` does, after making its marker environment Windows' (argv[1]).
# Marker.evaluate() looks default_environment up in its module at every call, and pip's
# installation report imports it by name: patched before pip is imported, both see Windows.
PIP_AS_ON_WINDOWS = """\
import json, runpy, sys
from pip._vendor.packaging import markers
host, windows = markers.default_environment, json.loads(sys.argv[1])
markers.default_environment = lambda: {**host(), **windows}
sys.argv = ["pip", *sys.argv[2:]]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""
# Lines of pip's output that mean the index was not reached (not that a pin cannot install).
NETWORK_TROUBLE = re.compile(r"NewConnectionError|ConnectTimeout|Max retries exceeded|"
                             r"Could not fetch URL|SSLError|ProxyError|"
                             r"Temporary failure in name resolution|Name or service not known")


def load_bootstrap():
    """scripts/bootstrap.py as a module (it only imports the standard library)."""
    spec = importlib.util.spec_from_file_location("phi3_aipc_bootstrap",
                                                  ROOT / "scripts" / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def windows_environment() -> dict[str, str]:
    return {**default_environment(), **WINDOWS_MARKERS}


def for_windows(requirements: list[str], project: dict) -> list[str]:
    """The requirements that apply on Windows, without their markers; the project's own extras
    (`phi3-aipc[openvino,...]`) are replaced by what those extras list."""
    env, name, found = windows_environment(), project["name"], []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        if req.name == name:
            extras = project.get("optional-dependencies", {})
            for extra in sorted(req.extras):
                found += for_windows(extras[extra], project)
            continue
        req.marker = None
        found.append(str(req))
    return found


def winml_extras(requirements: list[str], name: str) -> list[str]:
    """The project's own line of `all` with the winml extra in place of onnx; `all`'s other
    lines are .venv's own pins (transformers for DirectML's builder), not the Windows ML one's."""
    found = []
    for line in requirements:
        req = Requirement(line)
        if req.name == name:
            req.extras = (req.extras - {"onnx"}) | {"winml"}
            found.append(str(req))
    return found


def requirements() -> dict[str, list[str]]:
    """What the setup installs on Windows into each environment: {"main": [...], "npu": [...],
    "winml": [...]}. "winml" is the opt-in Windows ML environment: .venv's extras with winml
    instead of onnx (one onnxruntime-genai variant per environment)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    bootstrap = load_bootstrap()
    extras = project.get("optional-dependencies", {})
    base = for_windows(project["dependencies"], project)
    main = [bootstrap.TORCH, *base,
            *for_windows(extras["all"] + extras["docs"], project)]  # `-e .[all,docs]`
    npu = [bootstrap.TORCH, *bootstrap.NPU_DEPENDENCIES, *bootstrap.NPU_BUILD_TOOLS,
           bootstrap.NPU_LIBRARY, *base]  # `-e .` there too: phi3_aipc's own dependencies
    winml = [bootstrap.TORCH, *base,
             *for_windows(winml_extras(extras["all"], project["name"]), project)]
    return {env: list(dict.fromkeys(reqs))
            for env, reqs in (("main", main), ("npu", npu), ("winml", winml))}


def pip_command(reqs: list[str], report: Path, target: Path) -> list[str]:
    """pip's dry run of installing `reqs` into a CPython 3.11 on 64-bit Windows."""
    return [sys.executable, "-c", PIP_AS_ON_WINDOWS, json.dumps(WINDOWS_MARKERS),
            "install", "--dry-run", "--quiet", "--isolated", "--no-cache-dir",
            "--disable-pip-version-check",
            # Platform options need --target (older pip) or --dry-run (newer); nothing is
            # written there with --dry-run, and what this Python has installed is not looked at.
            "--target", str(target),
            "--only-binary", ":all:", "--platform", PLATFORM, "--implementation", "cp",
            "--python-version", PYTHON_VERSION, "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
            "--report", str(report), *reqs]


def pip_environment() -> dict[str, str]:
    """This machine's pip settings left out, as on a fresh Windows PC: PIP_CONFIG_FILE=os.devnull
    skips every pip.conf (global, user, site) and --isolated every other PIP_* variable. Here they
    add local wheel folders and indexes (Linux wheels, copies of PyPI's), and a cap on torch
    (<=2.14.1, which TORCH is under)."""
    return {**os.environ, "PIP_CONFIG_FILE": os.devnull}


def resolve(reqs: list[str], workdir: Path, timeout: float = 600):
    """pip's dry run: (success, report or None, pip's output)."""
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    out = subprocess.run(pip_command(reqs, report, workdir / "target"), capture_output=True,
                         text=True, env=pip_environment(), timeout=timeout)
    output = out.stdout + out.stderr
    ok = out.returncode == 0 and report.exists()
    return ok, (json.loads(report.read_text(encoding="utf-8")) if ok else None), output


def installs(report: dict) -> dict[str, tuple[str, str]]:
    """What the report would install: normalized name -> (version, file name)."""
    found = {}
    for item in report["install"]:
        name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        found[name] = (item["metadata"]["version"], item["download_info"]["url"].rsplit("/", 1)[1])
    return found


def main(argv: list[str]) -> int:
    lists = requirements()
    if "--list" in argv:
        for env, reqs in lists.items():
            print(f"{env}: {' '.join(reqs)}")
        return 0
    failed = False
    for env, reqs in lists.items():
        with tempfile.TemporaryDirectory() as tmp:
            ok, report, output = resolve(reqs, Path(tmp))
        if not ok:
            failed = True
            print(f"{env}: pip cannot install these on {PLATFORM}:\n{output}", file=sys.stderr)
            continue
        print(f"{env}: pip would install on {PLATFORM} (Python {PYTHON_VERSION}):")
        for name, (version, wheel) in sorted(installs(report).items()):
            print(f"  {name}=={version}  {wheel}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
