"""A canary for tomorrow's releases: the route packages' newest versions, without our pins.

    python scripts/test_latest.py            # or: make test-latest
    python scripts/test_latest.py --keep     # keep the throwaway environment and cache

Builds a throwaway environment in a temporary folder (never .venv), installs torch first
(bootstrap's TORCH, the CPU build), then the project without its pins (`pip install --no-deps
-e .`) and the newest releases of what it uses, unpinned: the route packages
(optimum-intel[openvino], openvino-genai, onnxruntime-genai, transformers, the builder's onnx and
onnx-ir) and the names of its other dependencies. Then it runs the parity tests and the
notebooks (the NPU library's notebook 01 left out: its environment keeps its own old pins) in a
cache of its own, and prints which packages moved against pyproject.toml's pins and what broke.
Not part of CI: a new upstream release must not block our landings. Exit code: pytest's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

try:  # any Python 3.10-3.12 runs this: pip carries both where they are not installed
    import tomllib
    from packaging.requirements import Requirement
except ModuleNotFoundError:
    from pip._vendor import tomli as tomllib
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bootstrap  # noqa: E402

ROUTE_PACKAGES = ["optimum-intel[openvino]", "openvino-genai", "onnxruntime-genai",
                  "transformers", "onnx", "onnx-ir"]
TESTS = ["tests/test_openvino.py", "tests/test_onnxruntime_genai.py", "tests/test_generate.py",
         "notebooks"]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> tuple[list[str], dict[str, str]]:
    """The names of what the project installs here (no versions), and its pins (name ->
    version) that apply on this platform."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    lines = project["dependencies"] + [line for extra in ("openvino", "onnx", "notebooks", "test")
                                       for line in extras[extra]] + extras["all"]
    names, pins = [], {}
    for line in lines:
        req = Requirement(line)
        if normal(req.name) in (normal(project["name"]), "torch"):  # torch: TORCH, first
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(req.name)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        if pinned:
            pins[normal(req.name)] = pinned[0]
    return list(dict.fromkeys(names)), pins


def installed(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], check=True,
                         capture_output=True, text=True).stdout
    return {normal(p["name"]): p["version"] for p in json.loads(out)}


def failures(junit: Path) -> list[str]:
    """'test id: first line of the message' for each failed or erroring test."""
    if not junit.is_file():
        return []
    found = []
    for case in ET.parse(junit).iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            message = (bad.get("message") or "").strip().splitlines() or [""]
            found.append(f"{case.get('classname')}::{case.get('name')}: {message[0][:200]}")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the environment and cache")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="phi3-aipc-latest-"))
    env_dir, python = work / "venv", bootstrap.python_of(work / "venv")
    print(f"Throwaway environment: {env_dir}", flush=True)
    try:
        venv.create(env_dir, with_pip=True)
        bootstrap.pip(env_dir, "--upgrade", "pip")
        index = os.environ.get("PHI3_AIPC_TORCH_INDEX")
        bootstrap.pip(env_dir, bootstrap.TORCH, *(["--index-url", index] if index else []))
        names, pins = project_requirements()
        bootstrap.pip(env_dir, "--no-deps", "-e", ".")
        # TORCH again, or pip upgrades it (to a CUDA build) for optimum-intel's torchvision.
        bootstrap.pip(env_dir, bootstrap.TORCH, *ROUTE_PACKAGES,
                      *[n for n in names if normal(n) not in map(normal, ROUTE_PACKAGES)])
        bootstrap.drop_torchvision(env_dir)
        subprocess.run([str(python), "-m", "ipykernel", "install", "--sys-prefix"], check=True)
        versions = installed(python)

        junit = work / "junit.xml"
        env = {**os.environ, "PHI3_AIPC_CACHE": str(work / "cache"), "PHI3_AIPC_SKIP_NPU": "1",
               "PHI3_AIPC_MODEL": "stand-in",
               "JUPYTER_PATH": str(env_dir / "share" / "jupyter"), "VIRTUAL_ENV": str(env_dir),
               # as in an activated environment: the notebooks type `!optimum-cli ...`
               "PATH": os.pathsep.join([str(python.parent), os.environ.get("PATH", "")])}
        tests = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider",
                                f"--junitxml={junit}", *TESTS, *args.pytest_args],
                               cwd=ROOT, env=env)
        broken = failures(junit)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n== test-latest, {date.today().isoformat()} ==")
    moved = sum(versions.get(name, "not installed") != pinned for name, pinned in pins.items())
    print(f"Our pins against the newest releases ({moved} moved):")
    for name, pinned in sorted(pins.items()):
        now = versions.get(name, "not installed")
        print(f"  {name:24} pinned {pinned:14} latest {now}"
              + ("" if now == pinned else "   <- moved"))
    print("Route packages installed: " + ", ".join(
        f"{normal(n).split('[')[0]} {versions.get(normal(n).split('[')[0], '?')}"
        for n in ROUTE_PACKAGES) + f", torch {versions.get('torch')}")
    if tests.returncode == 0:
        print("Result: PASSED (parity tests and notebooks on the newest releases)")
    else:
        print(f"Result: FAILED (pytest exit code {tests.returncode}); what broke:")
        for line in broken or ["(no test reports: see pytest's output above)"]:
            print(f"  {line}")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
