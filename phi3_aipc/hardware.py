"""What this PC has, and a verdict per route: `phi3-aipc doctor` and notebook 00."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from .cache import cache_dir
from .envs import IS_WINDOWS, npu_library_python

# The packages each route needs, as pip names them.
PACKAGES = [
    "torch", "transformers", "huggingface_hub",
    "openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf",
    "onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime",
    "intel-npu-acceleration-library",
]
VERDICTS = ("ready", "cpu-only", "missing")


def cpu_model() -> str:
    """The processor's marketing name, e.g. 'Intel(R) Core(TM) Ultra 7 155H'."""
    try:
        if IS_WINDOWS:
            import winreg

            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                                 r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
            return winreg.QueryValueEx(key, "ProcessorNameString")[0].strip()
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True).stdout.strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def openvino_devices() -> dict:
    """Devices the OpenVINO runtime reports, with their names and (NPU/GPU) driver versions."""
    if importlib.util.find_spec("openvino") is None:
        return {"devices": [], "error": "openvino is not installed"}
    try:
        import openvino as ov

        core = ov.Core()
        devices = []
        for name in core.available_devices:
            entry = {"name": name, "full_name": core.get_property(name, "FULL_DEVICE_NAME"),
                     "driver_version": None}
            for prop in ("NPU_DRIVER_VERSION", "GPU_DRIVER_VERSION"):
                try:
                    entry["driver_version"] = str(core.get_property(name, prop))
                except Exception:  # property not offered by this device
                    pass
            devices.append(entry)
        return {"devices": devices, "error": None}
    except Exception as err:  # a broken install should be reported, not crash doctor
        return {"devices": [], "error": f"{type(err).__name__}: {err}"}


def directml_status(versions: dict) -> dict:
    if not IS_WINDOWS:
        return {"available": False, "reason": "DirectML exists only on Windows."}
    if not versions["onnxruntime-genai-directml"]:
        return {"available": False, "reason": "onnxruntime-genai-directml is not installed."}
    try:
        import onnxruntime_genai as og

        ok = bool(getattr(og, "is_dml_available", lambda: True)())
        return {"available": ok, "reason": "" if ok else "the DirectML provider did not load."}
    except Exception as err:
        return {"available": False, "reason": f"{type(err).__name__}: {err}"}


NPU_LIBRARY_CHECK = """
import json
from intel_npu_acceleration_library.backend import get_driver_version, npu_available
from intel_npu_acceleration_library.backend.utils import __min_npu_driver_version__ as needed
npu = npu_available()
print(json.dumps({"npu": npu, "driver": get_driver_version() if npu else None,
                  "min_driver": needed}))
"""


def npu_library_status() -> dict:
    """Ask the NPU library, in its own environment, whether it sees an NPU and which driver."""
    python = npu_library_python()
    status = {"installed": python is not None, "python": python, "npu_available": None,
              "driver_version": None, "min_driver_version": None, "error": None}
    if python is None:
        return status
    try:  # in a subprocess: the library can abort the process that imports it
        out = subprocess.run([python, "-c", NPU_LIBRARY_CHECK], capture_output=True, text=True,
                             timeout=120)
        if out.returncode == 0:
            found = json.loads(out.stdout.strip().splitlines()[-1])
            status.update(npu_available=found["npu"], driver_version=found["driver"],
                          min_driver_version=found["min_driver"])
        else:
            status["error"] = (out.stderr.strip().splitlines() or ["?"])[-1]
    except (subprocess.TimeoutExpired, IndexError, ValueError) as err:
        status["error"] = f"{type(err).__name__}: {err}"
    return status


def route_verdicts(versions: dict, ov: dict, dml: dict, npu_lib: dict) -> dict:
    """ready: the route can use an accelerator here; cpu-only: it runs, on the CPU; missing."""
    names = {d["name"].split(".")[0] for d in ov["devices"]}
    routes = {}
    if not (versions["openvino-genai"] and versions["optimum-intel"]):
        routes["openvino"] = verdict("missing", "openvino-genai or optimum-intel is missing.",
                                     'python -m pip install -e ".[openvino]"')
    elif names & {"GPU", "NPU"}:
        routes["openvino"] = verdict("ready", f"OpenVINO devices: {', '.join(sorted(names))}.")
    else:
        routes["openvino"] = verdict(
            "cpu-only", "OpenVINO sees only the CPU. For the GPU or NPU, install Intel's GPU/NPU "
            "drivers (see the README's troubleshooting section).")

    has_ort = versions["onnxruntime-genai"] or versions["onnxruntime-genai-directml"]
    if not has_ort:
        routes["onnxruntime-genai"] = verdict("missing", "onnxruntime-genai is not installed.",
                                              'python -m pip install -e ".[onnx]"')
    elif dml["available"]:
        routes["onnxruntime-genai"] = verdict("ready", "DirectML is available.")
    elif IS_WINDOWS and not versions["onnxruntime-genai-directml"]:
        routes["onnxruntime-genai"] = verdict(
            "cpu-only", "The CPU build of onnxruntime-genai is installed, not the DirectML one.",
            "python -m pip uninstall -y onnxruntime-genai && "
            'python -m pip install -e ".[onnx]"')
    else:
        routes["onnxruntime-genai"] = verdict(
            "cpu-only", f"{dml['reason']} The same API runs on the CPU provider.")

    if not npu_lib["installed"]:
        fix = (None if sys.platform == "darwin" else
               "make setup (Linux), or py -3.11 scripts\\bootstrap.py setup (Windows): it "
               "builds .venv-npu")
        routes["npu-library"] = verdict("missing", "intel-npu-acceleration-library is not "
                                        "installed (it is archived; OpenVINO GenAI is its "
                                        "successor on the NPU)"
                                        + (", and has no macOS build." if fix is None else "."),
                                        fix)
    elif npu_lib["npu_available"]:
        driver, needed = npu_lib.get("driver_version"), npu_lib.get("min_driver_version")
        if driver and needed and driver < needed:
            routes["npu-library"] = verdict(
                "cpu-only", f"NPU driver {driver} is older than the {needed} the library needs.",
                "update the Intel NPU driver")
        else:
            routes["npu-library"] = verdict("ready", f"The NPU library sees an NPU (driver "
                                            f"{driver}).")
    else:
        routes["npu-library"] = verdict("cpu-only", "The NPU library sees no NPU and compiles "
                                        "for the CPU, where the other routes are faster.")
    return routes


def verdict(status: str, detail: str, fix: str | None = None) -> dict:
    assert status in VERDICTS
    return {"verdict": status, "detail": detail, "fix": fix}


def doctor() -> dict:
    """Everything `phi3-aipc doctor --json` prints (the README documents the keys)."""
    import psutil

    versions = package_versions()
    ov = openvino_devices()
    dml = directml_status(versions)
    npu_lib = npu_library_status()
    cpu = cpu_model()
    mem = psutil.virtual_memory()
    cache = cache_dir()
    return {
        "os": {"system": platform.system(), "release": platform.release(),
               "machine": platform.machine()},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "cpu": {"model": cpu, "is_core_ultra": "core(tm) ultra" in cpu.lower()
                or "core ultra" in cpu.lower(),
                "cores": psutil.cpu_count(logical=False), "threads": os.cpu_count()},
        "memory_gb": {"total": round(mem.total / 2**30, 1),
                      "available": round(mem.available / 2**30, 1)},
        "disk": {"path": str(cache), "free_gb": round(shutil.disk_usage(cache).free / 2**30, 1)},
        "packages": versions,
        "openvino": ov,
        "directml": dml,
        "npu_library": npu_lib,
        "routes": route_verdicts(versions, ov, dml, npu_lib),
    }


def format_report(report: dict) -> str:
    """The doctor report as text for a terminal or a notebook."""
    cpu = report["cpu"]
    lines = [
        f"OS      {report['os']['system']} {report['os']['release']} ({report['os']['machine']})",
        f"Python  {report['python']['version']}  {report['python']['executable']}",
        f"CPU     {cpu['model']} ({cpu['cores']} cores, {cpu['threads']} threads)"
        f"{'  Core Ultra: yes' if cpu['is_core_ultra'] else '  (not a Core Ultra)'}",
        f"Memory  {report['memory_gb']['total']} GB, {report['memory_gb']['available']} GB free",
        f"Disk    {report['disk']['free_gb']} GB free at {report['disk']['path']}",
        "", "Packages",
    ]
    lines += [f"  {name:32} {ver or '-'}" for name, ver in report["packages"].items()]
    lines += ["", "OpenVINO devices"]
    for d in report["openvino"]["devices"]:
        driver = f"  driver {d['driver_version']}" if d["driver_version"] else ""
        lines.append(f"  {d['name']:8} {d['full_name']}{driver}")
    if report["openvino"]["error"]:
        lines.append(f"  ({report['openvino']['error']})")
    lib = report["npu_library"]
    lines += [f"DirectML: {'available' if report['directml']['available'] else 'no'}"
              f" {report['directml']['reason']}",
              "NPU library: " + ("not installed" if not lib["installed"] else
                                 f"in {lib['python']}; sees an NPU: {lib['npu_available']}"
                                 + (f", driver {lib['driver_version']} (needs "
                                    f"{lib['min_driver_version']}+)"
                                    if lib["driver_version"] else "")),
              "", "Routes"]
    for name, r in report["routes"].items():
        lines.append(f"  {name:18} {r['verdict']:9} {r['detail']}")
        if r["fix"]:
            lines.append(f"  {'':18} fix: {r['fix']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(doctor(), indent=2))


# Bytes per weight of each precision on disk (int4 keeps the embedding and lm_head at int8).
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.75}


def weight_count(config: dict) -> int:
    """Phi-3's number of weights, from its config.json."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = hidden // heads
    per_layer = (hidden * (hidden + 2 * kv_heads * head_dim)  # q, k, v
                 + hidden * hidden  # o
                 + 3 * hidden * config["intermediate_size"])  # gate, up, down
    return layers * per_layer + 2 * config["vocab_size"] * hidden  # + embedding, lm_head


def preflight(model_dir: Path, precision: str, what: str) -> None:
    """Refuse an export that will not fit, with the numbers and the way to try anyway.

    Converters hold the model in fp32 (4 bytes per weight) while they work, plus about 1 GB of
    their own; the output needs its precision's bytes per weight, half again as scratch space.
    """
    import psutil

    from .errors import InsufficientResources

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = weight_count(config)
    need_ram = weights * 4 + 1e9
    need_disk = weights * BYTES_PER_WEIGHT[precision] * 1.5 + 0.1e9
    free_ram = psutil.virtual_memory().available
    free_disk = shutil.disk_usage(cache_dir()).free
    if need_ram > free_ram or need_disk > free_disk:
        raise InsufficientResources(
            f"{what} needs about {need_ram / 1e9:.1f} GB of memory and {need_disk / 1e9:.1f} GB "
            f"of disk ({weights / 1e9:.2f} billion weights); this PC has {free_ram / 1e9:.1f} GB "
            f"of memory and {free_disk / 1e9:.1f} GB of disk free (at {cache_dir()}). Close "
            "other programs or free disk space (PHI3_AIPC_CACHE moves the cache), or try anyway "
            "with --skip-preflight (skip_preflight=True).")
