"""Create or update the project's environment (.venv), then run a task in it.

    python scripts/bootstrap.py demo     # the main job: every installed route once
    python scripts/bootstrap.py test     # the whole test suite (pytest + nbval); on Linux
                                         # as root, also Debian's chromium for the browser test
    python scripts/bootstrap.py test-quick  # the unit and CLI tests only (under 10 minutes)
    python scripts/bootstrap.py setup    # only the environment
    python scripts/bootstrap.py lab      # JupyterLab on notebooks/
    python scripts/bootstrap.py docs     # the documentation site, notebooks run, in docs/site/

Only the standard library is used here, so any Python 3.10-3.12 can run it. Installing is
skipped when pyproject.toml and this script are unchanged since the last successful setup.
Set PHI3_AIPC_TORCH_INDEX to a package index URL to take torch from there (on Linux, PyTorch's
CPU-only index: the default Linux wheel is the multi-gigabyte CUDA build).

The archived Intel NPU Acceleration Library pins numpy<2 and its own OpenVINO, so it gets an
environment of its own, .venv-npu, with a Jupyter kernel "phi3-aipc-npu". Windows installs its
wheel; Linux builds it from the source distribution against the openvino 2024.4 wheel (it has no
Linux wheel, and its build would otherwise download OpenVINO and accept only Ubuntu).
PHI3_AIPC_SKIP_NPU=1 skips that environment (the NPU-library route then reports "missing").
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
NPU_VENV = ROOT / ".venv-npu"
TORCH = "torch==2.13.0"  # installed first, so nothing else pulls a CUDA build
NPU_LIBRARY = "intel-npu-acceleration-library==1.4.0"
# What the NPU library needs at run time and, on Linux, to build (seen working together).
NPU_DEPENDENCIES = ["openvino==2024.4.0", "numpy==1.26.4", "neural-compressor==3.7.1", "six",
                    "setuptools<81", "accelerate", "transformers==4.57.6"]
NPU_BUILD_TOOLS = ["wheel", "cmake", "ninja"]
NPU_KERNEL = "phi3-aipc-npu"
UTF8_KERNEL = ["--env", "PYTHONUTF8", "1"]  # both kernels run in Python's UTF-8 mode


def bin_dir(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin")


def python_of(env: Path) -> Path:
    return bin_dir(env) / ("python.exe" if os.name == "nt" else "python")


BIN = bin_dir(VENV)
PYTHON = python_of(VENV)
STAMP = VENV / "phi3-aipc-setup.txt"


class Phases:
    """Wall time of each phase (environments, chromium, tests), printed at the end, so every CI
    log shows where the minutes went."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def run(self, name: str, step, *args):
        start = time.monotonic()
        try:
            return step(*args)
        finally:
            self.times.append((name, time.monotonic() - start))

    def report(self) -> None:
        total = sum(t for _, t in self.times)
        lines = [f"  {name:<14} {t:7.0f} s" for name, t in self.times]
        print("\nbootstrap phases (wall time):\n" + "\n".join(lines)
              + f"\n  {'total':<14} {total:7.0f} s", flush=True)


PHASES = Phases()


def fingerprint() -> str:
    h = hashlib.sha256(sys.version.encode())
    for f in ("pyproject.toml", "scripts/bootstrap.py"):
        h.update((ROOT / f).read_bytes())
    return h.hexdigest()


def pip(env: Path, *args: str, extra_env: dict | None = None) -> None:
    subprocess.run([str(python_of(env)), "-m", "pip", "install", "--disable-pip-version-check",
                    *args], check=True, cwd=ROOT, env={**os.environ, **(extra_env or {})})


def create(env: Path, stamp: Path) -> bool:
    """Create `env` if needed; True if it must be (re)installed."""
    if not python_of(env).exists():
        print(f"Creating {env} ...", flush=True)
        venv.create(env, with_pip=True)
    if stamp.exists() and stamp.read_text() == fingerprint():
        return False
    pip(env, "--upgrade", "pip")
    index = os.environ.get("PHI3_AIPC_TORCH_INDEX")
    pip(env, TORCH, *(["--index-url", index] if index else []))
    return True


def setup() -> None:
    PHASES.run(".venv", setup_main)
    if os.environ.get("PHI3_AIPC_SKIP_NPU") or sys.platform == "darwin":
        print("Skipping the NPU-library environment (.venv-npu).", flush=True)
        return
    PHASES.run(".venv-npu", setup_npu)


def setup_main() -> None:
    if create(VENV, STAMP):
        print("Installing the project into .venv (first time: a few minutes) ...", flush=True)
        # TORCH again, or pip upgrades torch (to a CUDA build) for optimum-intel's torchvision.
        pip(VENV, TORCH, "-e", ".[all,docs]")  # docs: `make docs`, and test_docs builds the site
        drop_torchvision(VENV)
        # A "python3" kernel inside .venv, found first through JUPYTER_PATH (see jupyter_env).
        # UTF-8 mode: on Windows the kernel and its `!` children then agree on UTF-8 instead of
        # the ANSI code page (notebook 01's child cells; paths such as C:\Users\Renée).
        subprocess.run([str(PYTHON), "-m", "ipykernel", "install", "--sys-prefix",
                        *UTF8_KERNEL], check=True)
        STAMP.write_text(fingerprint())


def drop_torchvision(env: Path) -> None:
    """optimum-intel 2 declares torchvision, which nothing here uses. Next to the CPU build of
    torch it breaks transformers (PyPI's Linux torchvision is built for the CUDA torch: "operator
    torchvision::nms does not exist"), so it is removed again; pip then reports it missing."""
    subprocess.run([str(python_of(env)), "-m", "pip", "uninstall", "-y", "-q", "torchvision"],
                   check=True, cwd=ROOT)


def setup_npu() -> None:
    """.venv-npu: the NPU library, phi3_aipc, and a Jupyter kernel for notebook 01."""
    stamp = NPU_VENV / "phi3-aipc-setup.txt"
    if not create(NPU_VENV, stamp):
        return
    print("Installing the NPU Acceleration Library into .venv-npu ...", flush=True)
    pip(NPU_VENV, *NPU_DEPENDENCIES, *NPU_BUILD_TOOLS)
    if os.name == "nt":
        pip(NPU_VENV, NPU_LIBRARY)
    else:
        build_npu_library()
    pip(NPU_VENV, "-e", ".", "ipykernel", "ipywidgets>=8", *NPU_DEPENDENCIES)  # 01's chat
    subprocess.run([str(python_of(NPU_VENV)), "-m", "ipykernel", "install", "--prefix",
                    str(VENV), "--name", NPU_KERNEL, "--display-name",
                    "Python (phi3-aipc NPU library)", *UTF8_KERNEL], check=True)
    stamp.write_text(fingerprint())


def build_npu_library() -> None:
    """Build the library's sdist against the openvino 2024.4 wheel instead of a download.

    Its CMake fetches an OpenVINO archive unless OV_LIBRARY_URL is set, and takes it from
    FETCHCONTENT_SOURCE_DIR_OPENVINO when that is set: we point it at a folder laid out like
    that archive (runtime/lib/intel64 with the wheel's libraries, python/openvino with the
    wheel's package), through a toolchain file, which CMake reads from the environment.
    """
    build = NPU_VENV / "npu-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    ov = Path(subprocess.run([str(python_of(NPU_VENV)), "-c",
                              "import openvino, os; print(os.path.dirname(openvino.__file__))"],
                             check=True, capture_output=True, text=True).stdout.strip())
    fake = build / "openvino"
    libs = fake / "runtime" / "lib" / "intel64"
    libs.mkdir(parents=True)
    for lib in (ov / "libs").iterdir():
        os.link(lib, libs / lib.name)
    main_lib = next(libs.glob("libopenvino.so.*"))  # the library links -lopenvino
    (libs / "libopenvino.so").symlink_to(main_lib.name)
    (fake / "python").mkdir()
    (fake / "python" / "openvino").symlink_to(ov, target_is_directory=True)
    toolchain = build / "toolchain.cmake"
    toolchain.write_text(
        'set(OV_LIBRARY_URL "provided-by-the-openvino-wheel")\n'
        f'set(FETCHCONTENT_SOURCE_DIR_OPENVINO "{fake}")\n'
        f'set(OpenVINO_DIR "{ov / "cmake"}")\n')
    subprocess.run([str(python_of(NPU_VENV)), "-m", "pip", "download", "--no-deps",
                    "--no-binary", ":all:", NPU_LIBRARY, "-d", str(build)], check=True)
    sdist = next(build.glob("intel_npu_acceleration_library-*.tar.gz"))
    print("Building the NPU Acceleration Library (about a minute) ...", flush=True)
    pip(NPU_VENV, "--no-build-isolation", "--no-deps", str(sdist),
        extra_env={"CMAKE_TOOLCHAIN_FILE": str(toolchain)})
    shutil.rmtree(build, ignore_errors=True)


def ensure_chromium() -> None:
    """tests/test_browser.py drives Debian's chromium; install it where apt-get runs as root."""
    if sys.platform != "linux" or shutil.which("chromium"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("No chromium, and no apt-get as root to install it: the browser test will be "
              "skipped (install Debian's chromium to run it).", flush=True)
        return
    print("Installing Debian's chromium for the browser test (about a minute) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env)


# Two workers, a test file or notebook each at a time (a notebook's cells share one kernel, a
# file's tests their module fixtures): on two cores the runs that wait (pip, kernels, the
# browser) overlap with the ones that compute. `-n 0` in ARGS runs everything in one process.
# --no-loadscope-reorder: xdist would otherwise hand out files by their number of tests, not
# in the longest-first order of conftest.py.
PARALLEL = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
# The inner loop: no notebooks, no second environments, no browser, no minutes-long runs.
QUICK = ["tests", "-m", "not (binder or browser or windows_pins or slow)"]


def main(argv: list[str]) -> int:
    task, extra = (argv[0] if argv else "setup"), argv[1:]
    pytest = [str(PYTHON), "-m", "pytest"]
    commands = {
        "setup": None,
        "demo": [str(BIN / "phi3-aipc"), "demo", *extra],
        "test": [*pytest, *PARALLEL, *extra],
        "test-quick": [*pytest, *PARALLEL, *QUICK, *extra],
        "lab": [str(BIN / "jupyter"), "lab", "notebooks", *extra],
        "docs": [str(PYTHON), "scripts/build_docs.py", *extra],
        "budget": [str(PYTHON), "scripts/notebook_budget.py", *extra],
    }
    if task not in commands:
        print(f"Unknown task {task!r}; use one of {', '.join(commands)}.", file=sys.stderr)
        return 2
    if task == "docs" and sys.version_info < (3, 11):  # pyproject's docs extra: MyST-Parser 5.2
        print("The documentation site needs Python 3.11 or newer (MyST-Parser 5.2); the notebooks "
              "and tests run on this one.", file=sys.stderr)
        return 2
    setup()
    if task == "test":
        PHASES.run("chromium", ensure_chromium)
    if commands[task] is None:
        return 0
    try:
        return PHASES.run(task, lambda: subprocess.run(commands[task], cwd=ROOT,
                                                       env=jupyter_env()).returncode)
    finally:
        if task.startswith("test"):
            PHASES.report()


def jupyter_env() -> dict:
    """As in an activated .venv: its programs (optimum-cli, which the notebooks type) come first
    on PATH. Jupyter looks in .venv first, so "python3" is .venv's and the NPU kernel is found."""
    path = [str(VENV / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]
    programs = [str(BIN), os.environ.get("PATH", "")]
    return {**os.environ, "JUPYTER_PATH": os.pathsep.join(filter(None, path)),
            "PATH": os.pathsep.join(filter(None, programs)), "VIRTUAL_ENV": str(VENV)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
