"""binder/ alone launches the suite, the way mybinder.org (repo2docker) builds it.

repo2docker copies the repository, installs binder/requirements.txt from its root with the
Python that binder/runtime.txt names, runs binder/postBuild, and starts Jupyter through
binder/start. This test does the same in a fresh virtual environment, then executes notebooks 00
and 03 there. It takes a few minutes (pip's cache makes the install quick): deselect it with
`-m "not binder"`.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOKS = ["00_check_your_ai_pc.ipynb", "03_openvino.ipynb"]
pytestmark = pytest.mark.binder


def runtime_python() -> str:
    """An interpreter of the version in binder/runtime.txt (skip if this machine has none)."""
    runtime = (BINDER / "runtime.txt").read_text().strip()
    wanted = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert wanted, f"binder/runtime.txt should read python-X.Y, not {runtime!r}"
    if f"{sys.version_info.major}.{sys.version_info.minor}" == wanted[1]:
        return sys.executable
    found = shutil.which(f"python{wanted[1]}")
    if found is None:
        reason = f"binder/runtime.txt asks for Python {wanted[1]}, which this machine lacks"
        if os.environ.get("PHI3_AIPC_REQUIRE_BINDER") or os.environ.get("CI"):
            pytest.fail(f"{reason} (PHI3_AIPC_REQUIRE_BINDER or CI is set, as .ci/run does: "
                        "the Binder test may not be skipped there)")
        pytest.skip(reason)
    return found


def copy_repository(dest: Path) -> None:
    """The repository's files, tracked or new (not .venv, caches or other ignored files)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def binder_env(env_dir: Path, home: Path) -> dict:
    """A session's environment: the new environment first on PATH, none of this test run's
    settings (phi3-aipc's, Jupyter's, Python's), a home of its own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PHI3_AIPC_", "JUPYTER", "PYTHON", "VIRTUAL_ENV", "HF_"))}
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env["PATH"]])
    env["HOME"] = str(home)
    return env


def run(cmd: list, cwd: Path, env: dict, timeout: float) -> None:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n" \
                                f"{out.stderr[-6000:]}"


def printed(notebook: Path) -> str:
    """Everything an executed notebook's cells printed."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "".join("".join(out.get("text", "")) for cell in cells
                   for out in cell.get("outputs", []))


def test_binder_builds_and_runs_notebooks_00_and_03(tmp_path):
    repo, env_dir, home = tmp_path / "repo", tmp_path / "env", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    copy_repository(repo)
    run([runtime_python(), "-m", "venv", str(env_dir)], repo, dict(os.environ), 120)
    python = env_dir / "bin" / "python"
    # pip with its usual cache (the real HOME); the PyTorch index may be unreachable here, and
    # pip would retry it for every package, so no retries.
    pip_env = {**binder_env(env_dir, home), "HOME": os.environ["HOME"], "PIP_RETRIES": "0"}
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r",
         "binder/requirements.txt"], repo, pip_env, 1200)
    env = binder_env(env_dir, home)
    run([repo / "binder" / "postBuild"], repo, env, 900)

    # What postBuild left: the stand-in and exports, in the cache that start names.
    cache = home / ".cache" / "phi3-aipc"
    assert len(list((cache / "stand-in").glob("*/model.safetensors"))) == 1
    # The notebooks' exports: OpenVINO int4 (also the NPU's) and ONNX Runtime GenAI int4 (CPU).
    exports = cache / "notebooks"
    npu_builds = list(exports.glob("stand-in-*/int4-ov/openvino_model.xml"))
    assert len(npu_builds) == 1
    made_by_postbuild = npu_builds[0].stat().st_mtime_ns
    assert len(list(exports.glob("stand-in-*/int4-cpu/model.onnx"))) == 1
    probe = ("import importlib.util, torch; print(torch.version.cuda, "
             "importlib.util.find_spec('intel_npu_acceleration_library'))")
    found = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert found == ["None", "None"], "torch should be the CPU build, and no NPU library there"

    executed = tmp_path / "executed"
    for notebook in NOTEBOOKS:
        run([repo / "binder" / "start", python, "-m", "jupyter", "nbconvert", "--to", "notebook",
             "--execute", "--ExecutePreprocessor.timeout=600", "--output-dir", str(executed),
             f"notebooks/{notebook}"], repo, env, 900)
        assert "stand-in" in printed(executed / notebook), f"{notebook} ran on another model"
    # Notebook 03 quantized its own 16-bit model (the lesson) and took postBuild's channel-wise
    # build for its NPU section instead of compressing that one again.
    built = {xml.parent.name for xml in exports.glob("stand-in-*/*/openvino_model.xml")}
    assert built == {"fp16-ov", "int4-g128-ov", "int4-ov"}, built
    assert npu_builds[0].stat().st_mtime_ns == made_by_postbuild, "notebook 03 rebuilt int4-ov"
    shutil.rmtree(env_dir)  # 2-3 GB; kept only when the test fails, to look into
