"""`phi3-aipc doctor --json`: the documented keys and a verdict for each route."""
import json
import os
import sys

import pytest

from phi3_aipc.doctor import format_report
from phi3_aipc.routes import get_route
from phi3_aipc.routes.base import VERDICTS

from .conftest import run_cli


@pytest.fixture(scope="module")
def report():
    out = run_cli("doctor", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_documented_keys(report):
    assert {"os", "python", "cpu", "memory_gb", "disk", "packages", "paths", "openvino",
            "directml", "npu_library", "routes"} <= report.keys()
    assert {"model", "is_core_ultra", "cores", "threads"} <= report["cpu"].keys()
    assert report["memory_gb"]["total"] > 0 and report["disk"]["free_gb"] >= 0
    assert report["packages"]["transformers"]


def test_a_verdict_per_route(report):
    assert set(report["routes"]) == {"openvino", "onnxruntime-genai", "npu-library"}
    for route in report["routes"].values():
        assert route["verdict"] in VERDICTS
        if route["verdict"] == "missing" and sys.platform != "darwin":  # macOS: no fix exists
            assert route["fix"]


def test_openvino_devices_are_listed(report):
    if report["packages"]["openvino"]:
        names = [d["name"] for d in report["openvino"]["devices"]]
        assert "CPU" in names


NO_PACKAGES = dict.fromkeys(["openvino-genai", "optimum-intel", "onnxruntime-genai",
                             "onnxruntime-genai-directml"])
NO_DML = {"available": False, "reason": "DirectML exists only on Windows."}
NO_NPU_LIB = {"installed": False, "npu_available": None}


def verdict(route: str, facts: dict, versions: dict) -> str:
    return get_route(route).verdict(facts, versions).verdict


def test_verdicts_follow_what_is_found():
    assert verdict("openvino", {"devices": []}, NO_PACKAGES) == "missing"
    assert verdict("onnxruntime-genai", NO_DML, NO_PACKAGES) == "missing"
    assert verdict("npu-library", NO_NPU_LIB, NO_PACKAGES) == "missing"
    assert get_route("openvino").verdict({"devices": []}, NO_PACKAGES).fix == \
        'python -m pip install -e ".[openvino]"'

    found = {"openvino-genai": "1", "optimum-intel": "1", "onnxruntime-genai": "1",
             "onnxruntime-genai-directml": None}
    gpu = {"devices": [{"name": "CPU"}, {"name": "GPU.0"}, {"name": "NPU"}]}
    cpu = {"devices": [{"name": "CPU"}]}
    assert verdict("openvino", gpu, found) == "ready"
    assert verdict("openvino", cpu, found) == "cpu-only"
    assert verdict("onnxruntime-genai", {"available": True, "reason": ""}, found) == "ready"
    assert verdict("onnxruntime-genai", NO_DML, found) == "cpu-only"
    assert verdict("npu-library", {"installed": True, "npu_available": True}, found) == "ready"
    assert verdict("npu-library", {"installed": True, "npu_available": False},
                   found) == "cpu-only"


def test_text_report_names_every_route(report):
    text = format_report(report)
    for name in report["routes"]:
        assert name in text


def test_the_windows_path_check_is_reported(report):
    """Windows' path limit and non-ASCII folders (tests/test_windows_paths.py checks the advice);
    elsewhere the report says "not Windows"."""
    paths = report["paths"]
    assert {"checked", "long_paths_enabled", "limit", "folders", "problems", "fixes",
            "detail"} <= paths.keys()
    assert paths["checked"] == (os.name == "nt")
    if os.name == "nt":
        assert set(paths["folders"]) == {"Hugging Face cache", "phi3-aipc cache"}
        assert paths["folders"]["phi3-aipc cache"]["path"] == report["disk"]["path"]
    else:
        assert paths["detail"].startswith("not Windows") and not paths["problems"]
    assert f"Paths   {paths['detail']}" in format_report(report)
