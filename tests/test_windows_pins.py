"""The Windows pins of every environment install: pip's dry run resolves them for win_amd64.

scripts/windows_pins.py reads what the setup installs on Windows from pyproject.toml and
scripts/bootstrap.py, and runs `pip install --dry-run --report` for 64-bit CPython 3.11 on
Windows, with pip's marker environment set to Windows' (so torch's Linux-only CUDA packages stay
out, as on Windows) and this machine's pip settings left out. pip reads the packages' metadata
from PyPI and installs nothing; where the index serves no separate metadata file (torch among them)
pip fetches the wheel to read it, so this test needs PyPI and takes about a minute. It fails, not
skips, when PyPI cannot be reached. Run it alone with `make test ARGS="-m windows_pins"`.
"""
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.windows_pins


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"phi3_aipc_{name}",
                                                  ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pins = load("windows_pins")
bootstrap = pins.load_bootstrap()
DIRECTML = "onnxruntime-genai-directml"
WINML = "onnxruntime-genai-winml"
# Needs onnxruntime-directml>=1.26.0, which PyPI does not have (it stops at 1.24.4).
UNINSTALLABLE = f"{DIRECTML}==0.14.1"
# torch's Linux-only dependencies (markers platform_system == "Linux"): never on Windows.
LINUX_ONLY = re.compile(r"nvidia-.*|cuda-.*|triton")


def name_of(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement)[0]).lower()


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("ERROR")]


def dry_run(env: str, reqs: list[str], workdir: Path):
    """pip's dry run of `reqs` for Windows: (success, report, output), or a clear failure when
    the package index is out of reach or pip hangs."""
    try:
        ok, report, output = pins.resolve(reqs, workdir)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{env}: pip's dry run for {pins.PLATFORM} took over {e.timeout:.0f} s "
                    f"(is PyPI reachable?)\nrequirements: {' '.join(reqs)}")
    if not ok and pins.NETWORK_TROUBLE.search(output):
        tail = "\n".join(output.strip().splitlines()[-15:])
        pytest.fail(f"{env}: pip could not reach the package index (PyPI), which this test needs "
                    f"to read the Windows wheels' metadata. pip's last lines:\n{tail}")
    return ok, report, output


def resolved(env: str, reqs: list[str], workdir: Path) -> dict[str, tuple[str, str]]:
    """What pip would install on Windows (name -> (version, wheel)); fails with pip's errors."""
    ok, report, output = dry_run(env, reqs, workdir)
    if not ok:
        said = "\n".join(errors(output)).lower()
        named = " ".join(r for r in reqs
                         if re.search(rf"(?<![\w.-]){re.escape(name_of(r))}(?![\w-])", said))
        tail = "\n".join(output.strip().splitlines()[-15:])
        where = {"main": ".venv", "npu": ".venv-npu"}.get(env, "the Windows ML environment")
        pytest.fail(f"{env} ({where}): pip cannot install "
                    f"these on {pins.PLATFORM}, Python {pins.PYTHON_VERSION}.\n"
                    f"Named in pip's errors: {named or '(none of ours by name)'}\n"
                    f"Requirements: {' '.join(reqs)}\npip's last lines:\n{tail}")
    assert report["environment"]["sys_platform"] == "win32", \
        f"pip evaluated markers for {report['environment']}, not Windows"
    return pins.installs(report)


def check_windows_wheels(env: str, found: dict[str, tuple[str, str]]) -> None:
    tag = f"cp{pins.PYTHON_VERSION.replace('.', '')}"
    linux_only = sorted(n for n in found if LINUX_ONLY.fullmatch(n))
    assert not linux_only, f"{env}: torch's Linux-only packages would be installed: {linux_only}"
    version, wheel = found["torch"]
    assert (version, wheel) == (bootstrap.TORCH.split("==")[1],
                                f"torch-{version}-{tag}-{tag}-{pins.PLATFORM}.whl"), \
        f"{env}: torch should be PyPI's {bootstrap.TORCH} for {pins.PLATFORM} (CPU build): {wheel}"
    for name, (version, wheel) in found.items():
        assert wheel.endswith((f"-{pins.PLATFORM}.whl", "-any.whl")), \
            f"{env}: {name} {version} is not a Windows wheel: {wheel}"


def test_the_lists_come_from_pyproject_and_bootstrap():
    lists = pins.requirements()
    main, npu = lists["main"], lists["npu"]
    assert main[0] == npu[0] == bootstrap.TORCH
    project_name = "phi3-aipc"
    assert not [r for r in main + npu if name_of(r) == project_name]
    # Markers evaluated for Windows: the DirectML variant, not the CPU one.
    names = {name_of(r) for r in main}
    assert DIRECTML in names and "onnxruntime-genai" not in names
    # Each extra that `all` names (openvino, onnx, notebooks, test) is in .venv's list.
    assert {"openvino==2026.4.1", "onnx==1.23.2", "jupyterlab>=4", "pytest>=8"} <= set(main)
    assert [*bootstrap.NPU_DEPENDENCIES, bootstrap.NPU_LIBRARY] == \
        [r for r in npu if r in bootstrap.NPU_DEPENDENCIES or r == bootstrap.NPU_LIBRARY]
    assert "intel-npu-acceleration-library" not in {name_of(r) for r in main}
    # The Windows ML environment: .venv's list with the winml extra in place of onnx.
    winml = lists["winml"]
    names = {name_of(r) for r in winml}
    assert WINML in names and not names & {DIRECTML, "onnxruntime-genai"}
    assert {"openvino==2026.4.1", "onnx==1.23.2", "jupyterlab>=4", "pytest>=8"} <= set(winml)
    assert {"transformers==4.57.6", "transformers==5.5.4"} == \
        {r for r in main + winml if name_of(r) == "transformers" and "==" in r}
    # .venv also has the docs extra (setup installs `.[all,docs]`); the Windows ML one does not.
    docs = {"sphinx", "myst-nb", "myst-parser", "furo"}
    assert docs <= {name_of(r) for r in main} and not docs & names
    assert {r for r in main if name_of(r) not in (DIRECTML, "transformers", *docs)} == \
        {r for r in winml if name_of(r) not in (WINML, "windowsml", "transformers")}
    assert "windowsml" in names  # the catalog's bindings, for registering providers


def test_main_environment_installs_on_windows(tmp_path):
    found = resolved("main", pins.requirements()["main"], tmp_path)
    check_windows_wheels("main", found)
    assert DIRECTML in found and "onnxruntime-genai" not in found, \
        f"one onnxruntime-genai variant, DirectML's, on Windows: {sorted(found)}"
    assert "onnxruntime-directml" in found and "onnxruntime" not in found
    assert found["openvino"][0] == "2026.4.1"
    assert found["transformers"][0] == "4.57.6"  # what DirectML's 0.13 builder needs


def test_winml_environment_installs_on_windows(tmp_path):
    found = resolved("winml", pins.requirements()["winml"], tmp_path)
    check_windows_wheels("winml", found)
    assert found[WINML][0] == "0.18.0"
    # It bundles the Windows ML runtime (DirectML included): no onnxruntime package beside it.
    assert not {DIRECTML, "onnxruntime-genai", "onnxruntime", "onnxruntime-directml"} & set(found)
    assert found["transformers"][0] == "5.5.4"  # the 0.18 builder needs transformers 5


def test_npu_environment_installs_on_windows(tmp_path):
    found = resolved("npu", pins.requirements()["npu"], tmp_path)
    check_windows_wheels("npu", found)
    version = bootstrap.NPU_LIBRARY.split("==")[1]
    tag = f"cp{pins.PYTHON_VERSION.replace('.', '')}"
    assert found["intel-npu-acceleration-library"] == (
        version, f"intel_npu_acceleration_library-{version}-{tag}-{tag}-{pins.PLATFORM}.whl")
    assert found["numpy"][0] == "1.26.4" and found["openvino"][0] == "2024.4.0"


def test_a_pin_that_cannot_install_on_windows_fails(tmp_path):
    """The check above can fail: .venv's list with a DirectML runtime that has no Windows stack."""
    main = pins.requirements()["main"]
    pinned = [r for r in main if name_of(r) == DIRECTML]
    assert len(pinned) == 1, f"expected one {DIRECTML} pin in {main}"
    broken = [UNINSTALLABLE if r == pinned[0] else r for r in main]
    ok, _, output = dry_run("main", broken, tmp_path)
    assert not ok, (f"{UNINSTALLABLE} resolved for {pins.PLATFORM}; if PyPI now has "
                    f"onnxruntime-directml>=1.26.0, pick another pin that cannot install here")
    message = "\n".join(errors(output))
    assert "onnxruntime-directml>=1.26.0" in message and (
        "No matching distribution found" in message or "ResolutionImpossible" in message), \
        f"pip failed, but not with a resolution error:\n{output[-3000:]}"
