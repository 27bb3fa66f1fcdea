"""`phi3-aipc bench`: every field, for the routes at their fast precisions, on the stand-in."""
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc import bench
from phi3_aipc.chat import prompt_ids
from phi3_aipc.errors import Phi3AipcError
from phi3_aipc.standin import load_tokenizer

from .conftest import run_cli


def test_prompts_are_distinct_and_have_their_stored_token_counts():
    tokenizer = load_tokenizer()
    prompts = bench.load_prompts()
    assert sorted(prompts) == list(bench.LENGTHS)
    for target, items in prompts.items():
        texts = [p["text"] for p in items]
        assert len(set(texts)) == len(texts) >= 4
        for p in items:
            ids = prompt_ids(tokenizer, [{"role": "user", "content": p["text"]}])
            assert len(ids) == p["tokens"]
            assert target <= p["tokens"] <= target + 2


@pytest.fixture(scope="module")
def report(tmp_path_factory, stand_in):
    folder = tmp_path_factory.mktemp("bench")
    out = run_cli("bench", "--model", "stand-in", "--backend", "transformers", "--backend",
                  "openvino", "--backend", "onnxruntime-genai", "--precision", "default",
                  "--device", "cpu", "--new-tokens", "8", "--json", str(folder / "b.json"),
                  "--csv", str(folder / "b.csv"), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(folder / "b.csv", newline="") as f:
        table = list(csv.DictReader(f))
    return json.loads((folder / "b.json").read_text()), table, out.stdout


@pytest.mark.slow
def test_bench_measures_each_route_at_its_fast_precision(report):
    data, _, _ = report
    by_config = {r["config"]: r for r in data["results"]}
    for config in ("transformers fp32 cpu", "openvino int4 CPU", "onnxruntime-genai int4 cpu"):
        r = by_config[config]
        assert "error" not in r, r
        assert r["artifact_mb"] > 0 and r["peak_rss_mb"] > 0
        assert 0 < r["weights_read_mb"] <= r["artifact_mb"]
        assert r["load_cold_s"] > 0 and r["load_warm_s"] > 0
        assert sorted(map(int, r["lengths"])) == list(bench.LENGTHS)
        for n, row in r["lengths"].items():
            assert int(n) <= row["prompt_tokens"] <= int(n) + 2
            # one warm-up and three timed runs, each on a prompt of its own
            assert row["warmup_prompt"] == 0 and row["prompts"] == [1, 2, 3]
            for key in ("ttft_ms", "tpot_ms"):
                s = row[key]
                assert len(s["runs"]) == data["settings"]["reps"] == 3
                assert 0 < s["min"] <= s["median"] <= s["max"]
        d = r["decode"]
        assert d["tokens_per_s"] == pytest.approx(1000 / d["tpot_ms"], rel=0.01)
        assert d["efficiency"] > 0
    # int4 reads a fraction of the fp32 reference's bytes per token
    assert (by_config["openvino int4 CPU"]["weights_read_mb"]
            < by_config["transformers fp32 cpu"]["weights_read_mb"] / 2)
    assert data["fastest"]["config"] in by_config


@pytest.mark.slow
def test_bench_describes_the_machine(report):
    data, _, stdout = report
    m = data["machine"]
    assert m["cpu"]["model"] and m["cpu"]["cores"] >= 1 and m["memory_gb"]["total"] > 0
    assert m["packages"]["openvino"] and m["packages"]["torch"]
    assert m["bandwidth_gb_s"] > 0 and "torch.sum" in m["bandwidth_method"]
    assert "Fastest here:" in stdout and "GB/s" in stdout
    # What each route's runtime reports, under the route's name: it holds what the keys before
    # #31 held (openvino_devices: the device names; npu_library: installed, npu_available).
    facts = m["route_facts"]
    assert "CPU" in [d["name"] for d in facts["openvino"]["devices"]]
    assert {"installed", "npu_available"} <= set(facts["npu-library"])
    assert "openvino_devices" not in m and "npu_library" not in m


@pytest.mark.slow
def test_bench_csv_has_a_row_per_route_and_length(report):
    data, table, _ = report
    assert len(table) == len(data["results"]) * len(bench.LENGTHS)
    for row in table:
        for column in ("ttft_ms_median", "tpot_ms_median", "tokens_per_s", "efficiency",
                       "load_cold_s", "load_warm_s", "peak_rss_mb", "artifact_mb"):
            assert float(row[column]) > 0
        assert float(row["ttft_ms_min"]) <= float(row["ttft_ms_median"]) <= float(
            row["ttft_ms_max"])
    by_config = {r["config"]: r for r in data["results"]}
    for row in table:
        n = str(row["prompt_tokens"])
        lengths = by_config[row["config"]]["lengths"]
        match = [v for v in lengths.values() if str(v["prompt_tokens"]) == n]
        assert float(row["tpot_ms_median"]) == match[0]["tpot_ms"]["median"]


def test_emulated_npu_is_listed_labelled_and_never_ranked():
    configs = bench.available_configs(["openvino"], ["int4"])
    emulated = [c for c in configs if c.emulated]
    assert [c.label for c in emulated] == ["openvino int4 NPU (emulated on CPU)"]
    results = [
        {"config": "real", "emulated": False, "weights_read_mb": 300,
         "decode": {"tpot_ms": 30.0, "tokens_per_s": 33.3, "efficiency": 0.5}},
        {"config": emulated[0].label, "emulated": True, "weights_read_mb": 300,
         "decode": {"tpot_ms": 10.0, "tokens_per_s": 100.0, "efficiency": 0.9}},
    ]
    assert bench.fastest(results)["config"] == "real"


def test_the_emulated_npu_is_skipped_for_a_full_size_model_and_kept_for_the_bench_stand_in(
        tmp_path):
    """At Phi-3-mini's size the emulation held 9.3 GB and ran past 40 minutes (notebook 04)."""
    from phi3_aipc import catalog
    from phi3_aipc.standin import BENCH_CONFIG, BENCH_LAYERS

    emulated = next(c for c in bench.available_configs(["openvino"], ["int4"]) if c.emulated)
    cpu = bench.BenchConfig("openvino", "int4", "CPU")
    for name, config in (("full", dict(catalog.default().config)),
                         ("bench", {**BENCH_CONFIG, "num_hidden_layers": BENCH_LAYERS})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    reason = bench.too_big(emulated, tmp_path / "full")
    assert reason and "--device emulated" in reason and "\n" not in reason
    assert bench.too_big(emulated, tmp_path / "bench") is None
    assert bench.too_big(cpu, tmp_path / "full") is None or "emulat" not in bench.too_big(
        cpu, tmp_path / "full")


def test_bench_run_skips_the_emulated_npu_for_a_big_model_unless_asked(tmp_path, capsys,
                                                                      monkeypatch):
    import importlib
    from types import SimpleNamespace

    from phi3_aipc import catalog

    bench_run = importlib.import_module("phi3_aipc.bench.run")
    (tmp_path / "config.json").write_text(json.dumps(dict(catalog.default().config)))
    monkeypatch.setattr(bench_run, "resolve_model", lambda *_: SimpleNamespace(
        path=tmp_path, name="full size"))  # only its config is read before the workers
    measured = []
    monkeypatch.setattr(bench_run, "run_worker", lambda spec, _: measured.append(
        spec["config"]["load_options"].get("emulate_npu", False)) or {"error": "not measured"})
    monkeypatch.setattr(bench_run, "machine", lambda _: {})
    emulated = [c for c in bench.available_configs(["openvino"], ["int4"]) if c.emulated]
    bench.run(emulated + [bench.BenchConfig("openvino", "int4", "CPU")], str(tmp_path),
              reps=1, lengths=(32,), progress=False)
    assert measured == [False] and "skip: openvino int4 NPU (emulated" in capsys.readouterr().err
    measured.clear()
    bench.run(emulated, str(tmp_path), reps=1, lengths=(32,), progress=False,
              emulate_any_size=True)
    assert measured == [True]


def test_a_route_that_fails_is_an_error_row_and_the_others_still_run(stand_in):
    good = bench.BenchConfig("transformers", "fp32", "cpu")
    bad = bench.BenchConfig("openvino", "int4", "NPU")  # no NPU here, and not emulated
    report = bench.run([bad, good], model="stand-in", reps=1, new_tokens=2, lengths=(32,),
                       progress=False, bandwidth=False)
    failed, ran = report["results"]
    assert "NPU" in failed["error"] and "\n" not in failed["error"]
    assert (failed["backend"], failed["precision"], failed["device"]) == ("openvino", "int4",
                                                                           "NPU")
    assert ran["decode"]["tpot_ms"] > 0 and report["fastest"]["config"] == ran["config"]
    assert "skipped: " in bench.table(report)


@pytest.mark.slow
def test_bench_stand_in_has_phi3_mini_shapes_and_gets_an_estimate(tmp_path):
    out = run_cli("bench", "--model", "bench-stand-in:1", "--backend", "transformers",
                  "--lengths", "32", "--reps", "1", "--new-tokens", "2",
                  "--json", str(tmp_path / "b.json"), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "b.json").read_text())
    r = data["results"][0]
    config = json.loads((Path(r["artifact"]) / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
            config["vocab_size"], config["num_hidden_layers"]) == (3072, 8192, 32, 32064, 1)
    per_layer, head = 3072 * 3 * 3072 + 3072 * 3072 + 3 * 3072 * 8192, 3072 * 32064
    assert r["weights_read_mb"] == pytest.approx((per_layer + head) * 4 / 1e6, rel=1e-3)
    assert r["output_layer_mb"] == pytest.approx(head * 4 / 1e6, rel=1e-3)
    estimate = r["estimate_32_layers"]
    assert "estimate" in estimate["note"]
    # 32 layers read 32x the layer bytes but the output layer once; the prompt pass scales
    # with the layers
    assert estimate["tpot_scale"] == pytest.approx((head + 32 * per_layer) / (head + per_layer),
                                                   rel=1e-3)
    assert estimate["tpot_ms"] == pytest.approx(r["decode"]["tpot_ms"] * estimate["tpot_scale"],
                                                rel=0.01)
    assert estimate["ttft_scale"] == 32
    assert "32 layers) estimate" in out.stdout


@pytest.mark.parametrize("kwargs, message", [
    (dict(reps=0), "reps must be"),
    (dict(lengths=(99,)), "No benchmark prompts of [99]"),
    (dict(new_tokens=1), "new_tokens must be at least 2"),
    (dict(model="bench-stand-in:99"), "layer count as 1-32"),
])
def test_bench_refuses_bad_settings_before_measuring(kwargs, message):
    configs = bench.available_configs(["transformers"])
    with pytest.raises(Phi3AipcError, match=re.escape(message)):
        bench.run(configs, **{"model": "stand-in", **kwargs}, progress=False, bandwidth=False)


@pytest.mark.parametrize("args, message", [
    (["--backend", "transformers", "--lengths", "a,b"], "--lengths takes token counts"),
    (["--backend", "transformers", "--backend", "nope"], "Unknown route"),
    (["--backend", "npu-library", "--device", "cpu"], "Nothing to measure"),
])
def test_bench_bad_input(args, message):
    out = run_cli("bench", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_overhead_script_compares_with_the_raw_loops(stand_in):
    """The script runs (its ratio target is for real sizes: see docs/benchmark.md). Three
    rounds, not one: a stand-in's token takes about a millisecond, and with a second test worker
    loading a model beside it a single round's difference of two wall times came out negative
    (-0.05 ms per token in one CI run); the median of three does not."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_overhead.py"
    out = subprocess.run([sys.executable, str(script), "--model", "stand-in", "--extra", "96",
                          "--reps", "3"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert any(line.startswith("route  ") for line in out.stdout.splitlines())
    for route in ("openvino", "onnxruntime-genai"):
        line = next(line for line in out.stdout.splitlines() if line.startswith(route))
        ours, raw, ratio = (float(x) for x in line.split()[2:5])
        # On the tiny stand-in a token takes about a millisecond, so the ratio is noise here;
        # the target applies at real sizes (docs/benchmark.md). This checks both sides were timed.
        assert ours > 0 and raw > 0 and ratio > 0 and ("ok" in line or "OVER TARGET" in line)
