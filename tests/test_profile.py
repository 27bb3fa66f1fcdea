"""scripts/profile_decode.py and scripts/kernel_check.py give breakdowns that hold together.

Cheap runs (the stand-in, a few tokens; one small kernel model): what is checked is consistency,
never speed. A decode step's operators must fit inside the step they were timed in, every part
must be there, and every bandwidth must be positive and below anything memory can deliver.
"""
import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# No memory, cache or register file of a two-core PC reads a terabyte a second: a figure above
# this is a unit or byte-count error, not a fast kernel.
PHYSICAL_GB_S = 1000.0
PARTS = {"layer matmuls", "output layer", "attention + KV cache", "other graph ops",
         "runtime between ops", "sampling + library per token", "phi3_aipc per token"}
OPERATORS = ("layer matmuls", "output layer", "attention + KV cache", "other graph ops")


def run(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def profiled(stand_in, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "profile.json"
    done = run("profile_decode.py", "--model", "stand-in", "--prompt-tokens", "16",
               "--new-tokens", "14", "--warmup", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), done.stdout


@pytest.mark.parametrize("route", ["openvino", "onnxruntime-genai"])
def test_decode_breakdown_holds_together(profiled, route):
    report, printed = profiled
    result = next(r for r in report["results"] if r["route"].startswith(route))
    parts = result["parts"]
    assert set(parts) == PARTS and all(math.isfinite(v) for v in parts.values())
    step = result["model_step_ms"]
    # The step's figure is a mean over the steps timed (their central half): inside their range.
    low, high = result["model_step_range"]
    assert low <= step <= high, result
    # The operators, each timed by the profiler, fit inside the step they were timed in: a node
    # counted twice, or in the wrong step, would overflow it. Allowed: the profilers' whole-
    # microsecond rounding over a step of a couple of hundred ops (0.05 ms + 10%).
    operators = sum(parts[k] for k in OPERATORS)
    assert operators <= step * 1.1 + 0.05, (operators, step)
    ops = [parts[k] for k in ("layer matmuls", "output layer", "attention + KV cache")]
    assert all(v > 0 for v in ops), parts
    assert parts["phi3_aipc per token"] > 0
    # The library's loop per token holds its model's step (ORT: each generate_next_token wraps
    # its model run; OpenVINO: its time per token holds its inference): what is left over, the
    # loop's own work, is not negative (1% for OpenVINO's separately averaged figures).
    library = parts["sampling + library per token"]
    assert library >= -0.01 * result["pipeline"]["tpot_ms"], (library, result["pipeline"])
    # Bytes over time: positive and physically possible.
    for part, gb_s in result["bandwidth_gb_s"].items():
        assert 0 < gb_s < PHYSICAL_GB_S, (part, gb_s)
    assert 0 < result["output_layer_mb"] < result["weights_read_mb"]
    # The prompt is split the same way; its operators fit inside its model run, and (ORT) that
    # run inside the wall time of the append_tokens that made it.
    assert set(result["prefill_parts"]) == PARTS - {"sampling + library per token",
                                                     "phi3_aipc per token"}
    prompt_operators = sum(result["prefill_parts"][k] for k in OPERATORS)
    assert 0 < prompt_operators <= result["prefill_ms"] * 1.1 + 0.05, result["prefill_parts"]
    assert result["prefill_ms"] <= result.get("prefill_wall_ms", result["prefill_ms"])
    assert result["kernels"] and all(k.strip() for k in result["kernels"])
    assert result["pipeline"]["tpot_ms"] > 0 and result["pipeline"]["ttft_ms"] > 0
    assert route in printed and "phi3_aipc per token" in printed
    assert all(0 < p < PHYSICAL_GB_S for p in report["probe_gb_s"])


def test_openvino_pipeline_is_timed_on_both_attention_backends(profiled):
    result = next(r for r in profiled[0]["results"] if r["route"].startswith("openvino"))
    assert set(result["pipelines"]) == {"SDPA", "PA"}
    for figures in result["pipelines"].values():
        assert len(figures["tpot_runs"]) == 3 and figures["infer_ms"] > 0


def test_kernel_check_times_one_product_per_library(tmp_path):
    out = tmp_path / "kernels.json"
    done = run("kernel_check.py", "--shape", "3072x8192", "--layout", "our default",
               "--reps", "2", "--rounds", "2", "--total-mb", "20", "--threads", "1",
               "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert {r["library"] for r in rows} == {"openvino", "onnxruntime"}
    for r in rows:
        assert "error" not in r, r
        assert r["copies"] >= 2 and r["kernel"].strip()
        # OpenVINO's profiler names its kernel; ORT's kernel is inferred, and says so
        assert r["kernel"].startswith("inferred") == (r["library"] == "onnxruntime"), r
        # --threads reaches the library (OpenVINO's compiled model reports it) and the probe
        assert r["threads"] == 1 and r["probe_method"].split(", ")[1] == "1 threads", r
        # The weights' bytes: 4-bit codes plus scales (and zero points), not more, not less.
        assert 3072 * 8192 / 2 / 1e6 < r["weight_mb"] < 3072 * 8192 / 2 / 1e6 * 1.2
        assert r["ms"]["n"] == r["copies"] * (2 if r["library"] == "openvino" else 4) and \
            len(r["round_ms"]) == 2
        assert 0 < r["gb_s"] < PHYSICAL_GB_S and all(0 < g < PHYSICAL_GB_S
                                                     for g in r["round_gb_s"])
        # The profiler's time for one product is within what the whole run took per product
        # (a unit slip, µs for ms, would be a factor of a thousand).
        assert r["ms"]["median"] < 3 * r["wall_ms"], r
        assert 0 < r["probe_gb_s"]["min"] <= r["probe_gb_s"]["max"] < PHYSICAL_GB_S


@pytest.mark.parametrize("script,args", [
    ("profile_decode.py", ["--new-tokens", "3"]),
    ("profile_decode.py", ["--artifact", "nowhere"]),
    ("profile_decode.py", ["--route", "openvino", "--artifact", "nowhere"]),
    ("profile_decode.py", ["--passes", "0"]),
    ("profile_decode.py", ["--route", "openvino", "--artifact", ".", "--layout", "prebuilt"]),
    ("kernel_check.py", ["--layout", "no such layout"]),
    ("kernel_check.py", ["--rounds", "0"]),
])
def test_scripts_refuse_bad_arguments(script, args):
    done = run(script, *args, timeout=120)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args,names", [
    (["--model", "./no/such"], "./no/such"),
    # a folder that is there but is no ORT GenAI build: the route's own artifact check
    (["--route", "onnxruntime-genai", "--artifact", "notebooks"], "genai_config.json"),
])
def test_profile_refuses_what_it_cannot_read_in_one_line(args, names):
    done = subprocess.run([sys.executable, str(SCRIPTS / "profile_decode.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=SCRIPTS.parent)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("profile_decode.py: error:") and names in lines[0]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ort_kernels_are_read_from_the_decoder_genai_config_names(tmp_path):
    """A publisher's build names its graph otherwise than the builder's model.onnx."""
    kernel_check, profile_decode = load_script("kernel_check"), load_script("profile_decode")
    layout = kernel_check.Layout("onnxruntime", "tiny", group=32, accuracy=4)
    graph = kernel_check.onnxruntime_model(layout, 64, 16, 1)
    (tmp_path / "phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx").write_bytes(
        graph.SerializeToString())
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"decoder": {
        "filename": "phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx"}}}),
        encoding="utf-8")
    assert profile_decode.ort_kernels(tmp_path) == [
        "MatMulNBits bits=4 block_size=32 accuracy_level=4 (MLAS CompInt8, inferred from the "
        "accuracy level: ORT names only the operator)"]


def test_profile_plans_the_cpu_layout_where_directml_is_there(tmp_path, monkeypatch):
    """On a PC with DirectML the route's default plan is DirectML's layout; the profile runs
    on the CPU, so it must plan (and export) the CPU's."""
    from phi3_aipc.routes import get_route, onnxruntime_genai

    monkeypatch.setattr(onnxruntime_genai, "directml_status", lambda: (True, ""))
    assert get_route("onnxruntime-genai").plan().device == "dml"  # the PC the defect was on
    # a Phi-3 build's config, as far as the route reads it before loading (its model type)
    (tmp_path / "genai_config.json").write_text('{"model": {"type": "phi3"}}', encoding="utf-8")
    args = argparse.Namespace(artifact=str(tmp_path), model=None)
    route, plan, folder, name, layout = load_script("profile_decode").prepare(
        "onnxruntime-genai", "ours", args)
    assert plan.device == "cpu" and plan.prepare_options["target"] == "cpu", plan


def test_kernel_check_reports_a_refused_layout_on_one_line_and_its_own_faults_loudly(
        monkeypatch):
    kernel_check = load_script("kernel_check")
    monkeypatch.setitem(kernel_check.SHAPES, "tiny", (64, 16))
    monkeypatch.setattr(kernel_check, "measure_bandwidth", lambda: {
        "bandwidth_gb_s": 1.0, "bandwidth_method": "stub"})  # the probe is not what is checked
    # ONNX Runtime refuses 3-bit MatMulNBits with a message over several lines
    three_bits = kernel_check.Layout("onnxruntime", "int3", bits=3, group=32, accuracy=4)
    error = kernel_check.check(three_bits, "tiny", reps=1, total_mb=1, threads=1)["error"]
    assert error.startswith("Fail:") and "nbits" in error and "\n" not in error
    # a fault of the script's own is no refused layout: it stops the run
    def broken(*args):
        raise KeyError("a bug of the script's")

    monkeypatch.setitem(kernel_check.PRODUCTS, "onnxruntime", broken)
    with pytest.raises(KeyError):
        kernel_check.check(three_bits, "tiny", reps=1, total_mb=1, threads=1)


def test_central_half_leaves_out_the_steps_that_waited_for_a_core():
    central_half = load_script("profile_decode").central_half
    steps = [(w, f"step {i}") for i, w in enumerate([5.0, 5.2, 4.9, 40.0, 5.1, 0.5, 5.0, 5.3])]
    kept = central_half(steps)
    assert {w for w, _ in kept} <= {4.9, 5.0, 5.1, 5.2, 5.3} and len(kept) >= len(steps) // 2


def test_each_run_s_share_is_of_the_probes_taken_around_it():
    """Interleaved passes (A B, A B) with a probe before each run and after the last: run i of
    pass k sits between probes k*width+i and k*width+i+1, and its share is of their mean."""
    profile_decode = load_script("profile_decode")

    def run(route, step):
        return {"route": route, "layout": "ours", "prepare_options": {}, "threads": 2,
                "weights_read_mb": 300.0, "model_step_ms": step,
                "bandwidth_gb_s": {"weights / model step": 300.0 / step},
                "pipeline": {"tpot_ms": step + 1, "ttft_ms": 100.0}}

    passes = [[run("a", 10.0), run("b", 6.0)], [run("a", 12.0), run("b", 5.0)]]
    probe = [40.0, 60.0, 50.0, 30.0, 50.0]  # before a, b (pass 1), a, b (pass 2), and after
    a, b = profile_decode.summary(passes, probe)
    assert a["probe_gb_s"] == [50.0, 40.0] and b["probe_gb_s"] == [55.0, 40.0]
    assert a["share_of_probe"] == pytest.approx([300 / 10 / 50, 300 / 12 / 40])
    assert b["share_of_probe"] == pytest.approx([300 / 6 / 55, 300 / 5 / 40])
    assert a["tpot_ms"] == [11.0, 13.0] and b["ttft_ms"] == [100.0, 100.0]
    line = profile_decode.summary_table([a])[2]
    assert "11.00 (10.00-12.00)" in line and "61 (60-62) %" in line
