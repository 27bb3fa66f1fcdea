"""Where does a decode step's time go? One route's time per token, split by its own profiler.

Decoding one token reads every weight once, so the weight-bound matrix products should take
nearly all of a step at the machine's read bandwidth. For each route this prints one decode
step (batch 1, after a prompt of --prompt-tokens random tokens) split into:

- layer matmuls: the int4 matrix products of the decoder layers, with their achieved bandwidth
  (the bytes the artifact stores for them / their time);
- output layer: the vocabulary-sized matrix product (lm_head), with its bandwidth;
- attention + KV cache: the attention operator, and the KV cache's reads and writes;
- other graph ops: norms, rotary embedding, activations, residual adds, layout conversions;
- runtime between ops: the step's wall time minus the operators' (scheduling, allocation);
- sampling + library per token: the generation loop's own work (OpenVINO GenAI's sampler and
  pipeline; ORT GenAI's search and input updates), measured as the loop's time per token minus
  the model's (ORT: per step, over the same central half of the steps as the model's parts);
- phi3_aipc per token: what the package adds to each token (its TokenStream: a timestamp, the
  stop check, decoding the text so far), timed on the same tokens.

How each library is asked:
- OpenVINO: the export's model compiled alone on the CPU with PERF_COUNT (the stateful SDPA
  graph), its `get_profiling_info()` read before and after a window of decode steps (the CPU
  plugin reports each node's average over all runs, so a window's time is the difference of
  the totals); then `LLMPipeline` itself (its default attention backend, PagedAttention on the
  CPU, unless --ov-property ATTENTION_BACKEND=SDPA) for its perf metrics: per-token inference
  and sampling durations, and the time per output token.
- ONNX Runtime GenAI: a copy of the model folder (links to the weights) whose genai_config.json
  sets `enable_profiling` in the decoder's session options; the trace's `model_run` events
  bound each step, its node events split it; `generate_next_token` is timed around it.

The prompt (prefill) is split the same way, since time to first token is the same graph on
many tokens at once. Figures depend on the machine and its load; compare within one run.

    python scripts/profile_decode.py                     # both routes, bench stand-in
    python scripts/profile_decode.py --route onnxruntime-genai --new-tokens 16
    python scripts/profile_decode.py --route openvino --ov-property ENABLE_CPU_PINNING=NO
    python scripts/profile_decode.py --route onnxruntime-genai --artifact BUILD_FOLDER
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from phi3_aipc.bench.machine import measure_bandwidth
from phi3_aipc.errors import Phi3AipcError
from phi3_aipc.routes import get_route, prepare_artifact
from phi3_aipc.routes.session import TokenStream

PARTS = ("layer matmuls", "output layer", "attention + KV cache", "other graph ops",
         "runtime between ops", "sampling + library per token", "phi3_aipc per token")
ATTENTION_OV = ("ScaledDotProductAttention", "ScaledDotProductAttentionWithKVCache",
                "PagedAttention", "ReadValue", "Assign", "ReadValueWithSubgraph")
BLOCK = 4  # OpenVINO: decode steps per profiled window
ATTENTION_ORT = ("GroupQueryAttention", "MultiHeadAttention", "Attention", "PagedAttention")


def prompt_ids(n: int, seed: int) -> list[int]:
    """Random ordinary-vocabulary ids: the bench stand-in's replies are noise anyway, and each
    run gets a prompt of its own (OpenVINO GenAI reuses work for a prompt it has seen)."""
    return np.random.default_rng(seed).integers(100, 30000, n).tolist()


def parse_value(text: str):
    """KEY=VALUE settings: numbers as numbers, the rest as text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def stream_cost_ms(decode, ids: list[int], stops: set[int]) -> float:
    """phi3_aipc's per-token work: TokenStream.push over the generated ids, per token."""
    stream = TokenStream(decode, stops, ignore_eos=True, streamer=lambda text: None)
    start = time.perf_counter()
    for token in ids:
        stream.push(token)
    return (time.perf_counter() - start) * 1000 / len(ids)


# ---------------------------------------------------------------- OpenVINO


def ov_totals(request) -> dict[str, tuple[str, str, float]]:
    """Each executed node: (type, kernel, the total of its average x runs, µs) as the CPU
    plugin keeps them: an average over every run of the compiled model."""
    return {p.node_name: (p.node_type, p.exec_type, p.real_time.total_seconds() * 1e6)
            for p in request.get_profiling_info() if p.status.name == "EXECUTED"}


def ov_window(before: dict, runs_before: int, after: dict, runs_after: int) -> list[tuple]:
    """Per node, its mean time (ms) over the runs between two snapshots."""
    runs = runs_after - runs_before
    out = []
    for name, (kind, kernel, avg) in after.items():
        prior = before.get(name, (kind, kernel, 0.0))[2] * runs_before
        out.append((name, kind, kernel, max(avg * runs_after - prior, 0.0) / runs / 1000))
    return out


def ov_part(name: str, kind: str) -> str:
    if kind.startswith("FullyConnected"):
        return "output layer" if "lm_head" in name else "layer matmuls"
    if kind in ATTENTION_OV:
        return "attention + KV cache"
    return "other graph ops"


def split(nodes: list[tuple], wall_ms: float, part_of) -> tuple[dict, list, dict]:
    """Operators' times summed by part, the runtime's share (wall - operators), the kernels
    that ran the matrix products, and the other ops' time by op type."""
    parts = dict.fromkeys(PARTS[:4], 0.0)
    kernels, others = set(), {}
    for name, kind, kernel, ms in nodes:
        part = part_of(name, kind)
        parts[part] += ms
        if part in ("layer matmuls", "output layer"):
            kernels.add(f"{kind}: {kernel}")
        elif part == "other graph ops":
            others[kind] = others.get(kind, 0.0) + ms
    parts["runtime between ops"] = wall_ms - sum(parts.values())
    top = dict(sorted(others.items(), key=lambda kv: -kv[1])[:5])
    return parts, sorted(kernels), top


def last_position_logits(model):
    """The output layer on the last position only, as OpenVINO GenAI's pipelines compile the
    model (apply_slice_before_matmul_transformation): a prompt's other logits are never used."""
    from openvino import opset13 as ops

    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and "lm_head" in op.get_friendly_name():
            hidden = op.input_value(0)
            last = ops.gather(hidden, ops.constant(np.array([-1], dtype=np.int64)),
                              ops.constant(np.array(1, dtype=np.int64)))
            op.input(0).replace_source_output(last.output(0))
            return model
    raise RuntimeError("no output layer (a MatMul named lm_head) in the model")


def openvino_profile(folder: Path, prompt: int, new: int, warmup: int,
                     properties: dict) -> dict:
    """The compiled model alone, profiled: one prefill, then decode steps."""
    import openvino as ov

    plugin = {k: v for k, v in properties.items() if k != "ATTENTION_BACKEND"}
    core = ov.Core()
    model = last_position_logits(core.read_model(str(folder / "openvino_model.xml")))
    compiled = core.compile_model(model, "CPU", {**plugin, "PERF_COUNT": True})
    threads = compiled.get_property("INFERENCE_NUM_THREADS")
    request = compiled.create_infer_request()
    names = {name for port in compiled.inputs for name in port.get_names()}
    runs, walls = 0, {"prefill": [], "decode": []}

    def infer(ids: list[int], past: int, kind: str) -> int:
        nonlocal runs
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.ones((1, past + len(ids)), dtype=np.int64),
                "position_ids": np.arange(past, past + len(ids), dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32)}
        start = time.perf_counter()
        request.infer({k: v for k, v in feed.items() if k in names})
        walls[kind].append((time.perf_counter() - start) * 1000)
        runs += 1
        return int(request.get_tensor("logits").data[0, -1].argmax())

    for i in range(2):  # the first prefill pays one-time costs: the second is the one kept
        request.reset_state()
        before = (ov_totals(request), runs)
        token = infer(prompt_ids(prompt, seed=i), 0, "prefill")
    prefill = ov_window(*before, ov_totals(request), runs)
    # Windows of BLOCK consecutive steps: the plugin's averages are whole microseconds per
    # node, so a window's total is known to within a microsecond or so per node; over one step
    # that error would swamp the small nodes, over a few it does not.
    steps = []
    for step in range(warmup):
        token = infer([token], prompt + step, "decode")
    walls["decode"].clear()
    for block in range((new - warmup) // BLOCK):
        before = (ov_totals(request), runs)
        for step in range(BLOCK):
            token = infer([token], prompt + warmup + block * BLOCK + step, "decode")
        steps.append((statistics.mean(walls["decode"][-BLOCK:]),
                      ov_window(*before, ov_totals(request), runs)))
    return {**breakdown(steps, ov_part), "step_unit": f"windows of {BLOCK} steps",
            "threads": threads,
            "prefill_ms": walls["prefill"][-1],
            "prefill_parts": split(prefill, walls["prefill"][-1], ov_part)[0]}


def central_half(steps: list[tuple]) -> list[tuple]:
    """The steps (wall ms first) whose wall time lies between its quartiles."""
    walls = sorted(step[0] for step in steps)
    low, high = walls[len(walls) // 4], walls[(3 * len(walls)) // 4]
    return [step for step in steps if low <= step[0] <= high]


def breakdown(steps: list[tuple[float, list[tuple]]], part_of) -> dict:
    """Decode steps (wall ms, nodes) split into parts. The figures are the mean over the
    central half of the steps by wall time: on a shared machine a step now and then waits a
    scheduler slice for a core (a two-thread kernel stops at its barrier), which says nothing
    about the kernels; the mean over every step (which includes those waits) is given too."""
    walls = sorted(w for w, _ in steps)
    central = central_half(steps)
    mean_nodes: dict[tuple, float] = {}
    for _, nodes in central:
        for name, kind, kernel, ms in nodes:
            key = (name, kind, kernel)
            mean_nodes[key] = mean_nodes.get(key, 0.0) + ms / len(central)
    step_ms = statistics.mean(w for w, _ in central)
    parts, kernels, others = split([(*k, ms) for k, ms in mean_nodes.items()], step_ms, part_of)
    return {"model_step_ms": step_ms, "model_step_all_mean_ms": statistics.mean(walls),
            "model_step_range": [walls[0], walls[-1]], "steps": len(steps),
            "step_unit": "steps",
            "central_steps": len(central), "parts": parts, "kernels": kernels,
            "other_ops_ms": others}


def openvino_pipeline(folder: Path, prompt: int, new: int, properties: dict,
                      reps: int = 3) -> dict:
    """LLMPipeline as users run it, unprofiled, on each attention backend in turn (A B A B
    after a warm-up each): the stateful SDPA graph the profile splits, and PagedAttention,
    the library's default on the CPU. Per backend: time per output token and to the first
    token; for SDPA also the model's inference and the sampler's time per token (on
    PagedAttention the library's per-token inference time covers its whole step)."""
    import openvino as ov
    import openvino_genai as ov_genai

    backends = [properties["ATTENTION_BACKEND"]] if "ATTENTION_BACKEND" in properties \
        else ["SDPA", "PA"]
    pipes = {b: ov_genai.LLMPipeline(str(folder), "CPU",
                                     **{**properties, "ATTENTION_BACKEND": b})
             for b in backends}
    runs: dict[str, list] = {b: [] for b in backends}
    ids: list[int] = []
    seed = 100
    for rep in range(reps + 1):  # the first round warms up
        for backend, pipe in pipes.items():
            config = pipe.get_generation_config()
            config.max_new_tokens, config.ignore_eos, config.do_sample = new, True, False
            seed += 1
            tokens = np.array([prompt_ids(prompt, seed)], dtype=np.int64)
            inputs = ov_genai.TokenizedInputs(ov.Tensor(tokens),
                                              ov.Tensor(np.ones_like(tokens)))
            result = pipe.generate(inputs, config)
            if rep:
                runs[backend].append(result.perf_metrics)
                ids = [int(t) for t in result.tokens[0]]
    out = {}
    for backend, metrics in runs.items():
        raw = [m.raw_metrics for m in metrics]
        out[backend] = {
            "tpot_ms": statistics.median(m.get_tpot().mean for m in metrics),
            "tpot_runs": [m.get_tpot().mean for m in metrics],
            "ttft_ms": statistics.median(m.get_ttft().mean for m in metrics),
            # per run the mean over its tokens, as get_tpot() is; the median over runs
            "infer_ms": statistics.median(statistics.mean(r.token_infer_durations[1:]) / 1000
                                          for r in raw),
            "sampling_ms": statistics.median(statistics.mean(r.sampling_durations[1:]) / 1000
                                             for r in raw)}
    tokenizer = next(iter(pipes.values())).get_tokenizer()
    config = next(iter(pipes.values())).get_generation_config()
    stops = set(config.stop_token_ids) | {config.eos_token_id}
    out["phi3_aipc_ms"] = stream_cost_ms(tokenizer.decode, ids, stops)
    return out


def openvino_route(folder: Path, args) -> dict:
    properties = dict(args.ov_property)
    out = {"settings": properties}
    if "profile" in args.stage:
        out.update(openvino_profile(folder, args.prompt_tokens, args.new_tokens, args.warmup,
                                    properties))
    if "pipeline" in args.stage:
        gc.collect()
        pipelines = openvino_pipeline(folder, args.prompt_tokens, args.new_tokens, properties)
        ours = pipelines.pop("phi3_aipc_ms")
        out["pipeline"] = pipelines.get("SDPA") or next(iter(pipelines.values()))
        out["pipelines"] = pipelines
        if "parts" in out and "SDPA" in pipelines:
            # The stateful pipeline's loop beyond its model's inference (the graph profiled
            # above): the sampler, the streamer, the inputs of the next step.
            sdpa = pipelines["SDPA"]
            out["parts"]["sampling + library per token"] = sdpa["tpot_ms"] - sdpa["infer_ms"]
        if "parts" in out:
            out["parts"]["phi3_aipc per token"] = ours
    return out


# ---------------------------------------------------------------- ONNX Runtime GenAI


def profiled_copy(folder: Path, tmp: Path, session_options: dict) -> Path:
    """The model folder again, its files linked, with profiling (and any asked-for session
    options) in genai_config.json."""
    from phi3_aipc.files import link_or_copy

    copy = tmp / "model"
    copy.mkdir()
    for f in folder.iterdir():
        if f.name != "genai_config.json" and f.is_file():
            link_or_copy(f, copy / f.name)
    config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update({k: str(v) if k.startswith("session.") else v
                    for k, v in session_options.items()})
    (copy / "genai_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy


def ort_generate(folder: Path, prompt: int, new: int, seed: int) -> tuple[float, list, list]:
    """One generation with ORT GenAI's own loop: the prompt's wall time, each
    generate_next_token's, and the ids."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.clear_providers()
    model = og.Model(config)
    walls, ids = [], []
    for run in range(2):  # a warm-up generation, then the one kept
        params = og.GeneratorParams(model)
        # min_length masks the stop tokens: every run makes `new` tokens, as the bench does
        params.set_search_options(max_length=prompt + new, min_length=prompt + new,
                                  do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt_ids(prompt, seed + run))
        prefill = (time.perf_counter() - start) * 1000
        walls, ids = [], []
        while not generator.is_done():
            start = time.perf_counter()
            generator.generate_next_token()
            walls.append((time.perf_counter() - start) * 1000)
            ids.append(int(generator.get_next_tokens()[0]))
        del generator
    del model
    gc.collect()  # ends the session: ONNX Runtime writes its trace then
    return prefill, walls, ids


def ort_part(name: str, kind: str) -> str:
    if kind == "MatMulNBits" or kind == "MatMul":
        return "output layer" if "lm_head" in name else "layer matmuls"
    if kind in ATTENTION_ORT:
        return "attention + KV cache"
    return "other graph ops"


def ort_runs(trace: list[dict]) -> list[tuple[float, list[tuple]]]:
    """Each model run in the trace: its duration (ms) and its nodes (name, op, provider, ms)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"], e["dur"] / 1000) for e in trace
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e["ts"], e["name"].removesuffix("_kernel_time"), e["args"]["op_name"],
                    e["args"].get("provider", ""), e["dur"] / 1000) for e in trace
                   if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))
    out = []
    for begin, end, ms in runs:
        inside = [(n, op, provider, d) for ts, n, op, provider, d in nodes if begin <= ts <= end]
        out.append((ms, inside))
    return out


def onnxruntime_route(folder: Path, args) -> dict:
    from transformers import AutoTokenizer

    from phi3_aipc.routes.onnxruntime_genai import cpu_session_options

    # The route's own options on this CPU (its thread count), then any asked for
    options = {**cpu_session_options(), **dict(args.ort_session_option)}
    out = {"settings": options, "threads": options.get("intra_op_num_threads", "ORT's own")}
    with tempfile.TemporaryDirectory() as tmp:
        copy = profiled_copy(folder, Path(tmp), {**options,
                                                 "enable_profiling": str(Path(tmp) / "ort")})
        prefill_wall, walls, ids = ort_generate(copy, args.prompt_tokens, args.new_tokens,
                                                seed=0)
        traces = sorted(Path(tmp).glob("ort*.json"))
        if not traces:
            raise RuntimeError("ONNX Runtime wrote no profile: enable_profiling was not taken")
        runs = ort_runs(json.loads(traces[-1].read_text(encoding="utf-8")))
    # The kept generation (the second of two): its prompt's run, then one run per token after
    # the first (the first generate_next_token only picks from the prompt's logits; each later
    # one runs the model on the previous token, then picks).
    if len(runs) % 2 or len(runs) // 2 < len(walls):
        raise RuntimeError(f"{len(runs)} model runs in the trace for two generations of "
                           f"{len(walls)} tokens")
    (prefill_ms, prefill_nodes), *decode = runs[len(runs) // 2:]
    steps = list(zip(walls[1:], decode))[args.warmup:]
    # Each token's model run, and the loop's own work around it (the search, the inputs).
    result = breakdown([(ms, [(n, op, provider, d) for n, op, provider, d in inside])
                        for _, (ms, inside) in steps], ort_part)
    parts = result["parts"]
    # The loop's own work, as the other parts: the mean over the central half of the steps by
    # their model run's time (the same steps as the model's parts).
    parts["sampling + library per token"] = statistics.mean(
        wall - ms for ms, wall in central_half([(ms, wall) for wall, (ms, _) in steps]))
    hf = AutoTokenizer.from_pretrained(folder)
    decode_text = lambda tokens: hf.decode(tokens, skip_special_tokens=True)  # noqa: E731
    eos = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"][
        "eos_token_id"]
    parts["phi3_aipc per token"] = stream_cost_ms(
        decode_text, ids, {eos} if isinstance(eos, int) else set(eos))
    prefill_parts, _, _ = split(prefill_nodes, prefill_ms, ort_part)
    out.update({**result, "kernels": ort_kernels(folder), "prefill_ms": prefill_ms,
                "prefill_parts": prefill_parts, "prefill_wall_ms": prefill_wall,
                "pipeline": {"tpot_ms": statistics.mean(w for w, _ in steps),
                             "tpot_median_ms": statistics.median(w for w, _ in steps),
                             "ttft_ms": prefill_wall + walls[0]}})
    return out


def ort_kernels(folder: Path) -> list[str]:
    """The quantized matrix products' settings, read from the graph: ORT's trace names the
    operator only. MLAS runs accuracy level 4 with int8 activations (CompInt8), 0-1 with fp32
    (CompFp32): onnxruntime/core/mlas/lib/qnbitgemm.cpp."""
    import onnx

    from phi3_aipc.routes.onnxruntime_genai import decoder_file

    model = onnx.load(str(decoder_file(folder)), load_external_data=False)
    seen = set()
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            level = a.get("accuracy_level", 0)
            seen.add(f"MatMulNBits bits={a['bits']} block_size={a['block_size']} "
                     f"accuracy_level={level} (MLAS {'CompInt8' if level == 4 else 'CompFp32'}, "
                     "inferred from the accuracy level: ORT names only the operator)")
    return sorted(seen)


ROUTES = {"openvino": openvino_route, "onnxruntime-genai": onnxruntime_route}


# The layouts of the builds a 16 GB PC downloads instead of exporting (catalog.py), made from the
# same model with the same settings. ONNX Runtime GenAI: Microsoft's CPU build, RTN int4 in
# blocks of 32 with int8 activations (cpu-int4-rtn-block-32-acc-level-4), its output layer on
# every position. OpenVINO: its Phi-3 int4 builds' card settings (OpenVINO/Phi-3-mini-128k-
# instruct-int4-ov: int4_asym, group 128, ratio 0.8; the 4k build's card could not be read here).
LAYOUTS = {
    "ours": {"openvino": {}, "onnxruntime-genai": {}},
    "prebuilt": {"openvino": {"sym": False, "group_size": 128, "ratio": 0.8},
                 "onnxruntime-genai": {"block_size": 32, "accuracy_level": 4,
                                       "prune_lm_head": False}},
}


def prepare(route_name: str, layout: str, args) -> tuple:
    """The route's plan for its CPU default in `layout` (the profile runs on the CPU: where
    DirectML is there, the route's own default is a DirectML layout), and the folder to
    profile: --artifact, checked as the route checks its artifacts, or the route's CPU export
    of --model (found, and made if need be, before anything is timed)."""
    route = get_route(route_name)
    plan = route.plan(device=route.default_device,
                      prepare_options=LAYOUTS[layout][route_name] or None)
    if args.artifact:  # a build of one's own (another layout, a publisher's build)
        folder, name = Path(args.artifact), Path(args.artifact).name
        route.check_artifact(folder, plan.precision)
    else:
        source, folder = prepare_artifact(plan, args.model, progress=True)
        name = source.name
        if source.kind == "prebuilt":  # the route took the publisher's build (PHI3_AIPC_PREBUILT)
            plan, layout = plan.but(prepare_options={}), "the publisher's build"
    return route, plan, folder, name, layout


def profile(route, plan, folder: Path, name: str, layout: str, args) -> dict:
    read = route.weights_read(folder, plan.precision)
    result = {"route": f"{route.name} {plan.precision} {plan.device}", "model": name,
              "layout": "--artifact" if args.artifact else layout,
              "prepare_options": dict(plan.prepare_options),
              "artifact": str(folder), "weights_read_mb": read.total_mb,
              "output_layer_mb": read.output_layer_mb, **ROUTES[route.name](folder, args)}
    if "parts" in result:
        parts = result["parts"]
        layer_mb = read.total_mb - read.output_layer_mb
        result["step_ms"] = sum(parts.values())
        timed = {"layer matmuls": (layer_mb, parts["layer matmuls"]),
                 "output layer": (read.output_layer_mb, parts["output layer"]),
                 "weights / model step": (read.total_mb, result["model_step_ms"])}
        result["bandwidth_gb_s"] = {part: mb / ms  # MB/ms = GB/s
                                    for part, (mb, ms) in timed.items() if ms > 0}
    return result


def table(results: list[dict], probe: list[float]) -> str:
    lines = []
    for r in results:
        lines.append(f"\n{r['route']} ({r['model']}), {r['layout']} layout "
                     f"{r['prepare_options']}, settings: {r['settings'] or 'defaults'}, "
                     f"threads: {r.get('threads', '?')}")
        if "parts" in r:
            bw = r["bandwidth_gb_s"]
            lines += ["| part | ms per token | share | achieved GB/s |", "|---|---|---|---|"]
            for part, ms in r["parts"].items():
                gb = bw.get(part)
                lines.append(f"| {part} | {ms:.2f} | {ms / r['step_ms']:.0%} | "
                             + (f"{gb:.1f} |" if gb else "|"))
            lines.append(f"| **sum** | **{r['step_ms']:.2f}** | | |")
            lines.append(
                f"Model step {r['model_step_ms']:.2f} ms over the central {r['central_steps']} of "
                f"{r['steps']} {r['step_unit']} (all: mean "
                f"{r['model_step_all_mean_ms']:.2f}, range "
                f"{r['model_step_range'][0]:.2f}-{r['model_step_range'][1]:.2f}); "
                f"{r['weights_read_mb']:.0f} MB read per token "
                f"({r['output_layer_mb']:.0f} output layer): "
                f"{bw['weights / model step']:.1f} GB/s over the model step, "
                f"{bw['weights / model step'] / statistics.median(probe):.0%} of the probes' "
                "median.")
            lines.append("Kernels: " + "; ".join(r["kernels"]))
            lines.append("Other graph ops: " + ", ".join(f"{k} {v:.2f} ms"
                                                          for k, v in r["other_ops_ms"].items()))
            pre = r["prefill_parts"]
            lines.append(f"Prompt ({r['prefill_ms']:.0f} ms for the model): "
                         + ", ".join(f"{k} {v:.0f} ms" for k, v in pre.items()))
        for backend, p in (r.get("pipelines") or {"": r.get("pipeline")}).items():
            if not p:
                continue
            lines.append(f"The library's own loop{' (' + backend + ')' if backend else ''}: "
                         f"{p['tpot_ms']:.2f} ms per token, first token {p['ttft_ms']:.0f} ms"
                         + (f"; its per-token inference {p['infer_ms']:.2f} ms, sampling "
                            f"{p['sampling_ms']:.2f} ms" if "infer_ms" in p else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--route", action="append", choices=list(ROUTES))
    p.add_argument("--model", default="bench-stand-in")
    p.add_argument("--artifact", help="profile this int4 model folder (an export or build of "
                                      "the one --route) instead of the route's default export")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--warmup", type=int, default=4, help="decode steps left out of the figures")
    p.add_argument("--stage", action="append", choices=["profile", "pipeline"],
                   help="OpenVINO: only the profiled model, or only the pipeline (default both)")
    p.add_argument("--ov-property", action="append", default=[], metavar="KEY=VALUE",
                   type=lambda s: (s.split("=", 1)[0], parse_value(s.split("=", 1)[1])),
                   help="an OpenVINO property for the compiled model and the pipeline")
    p.add_argument("--ort-session-option", action="append", default=[], metavar="KEY=VALUE",
                   type=lambda s: (s.split("=", 1)[0], parse_value(s.split("=", 1)[1])),
                   help="a decoder session option for genai_config.json (e.g. "
                        "intra_op_num_threads=2, session.intra_op.allow_spinning=0)")
    p.add_argument("--layout", action="append", choices=list(LAYOUTS),
                   help="ours: the route's default export (the default); prebuilt: the layout of "
                        "the build a 16 GB PC downloads, made from --model")
    p.add_argument("--passes", type=int, default=1,
                   help="measure every configuration this many times, interleaved (A B A B), "
                        "the bandwidth probe before each run and after the last")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.prompt_tokens < 1 or args.new_tokens < args.warmup + 2 * BLOCK:
        p.error(f"--prompt-tokens must be positive and --new-tokens at least --warmup + "
                f"{2 * BLOCK}")
    if args.passes < 1:
        p.error("--passes must be at least 1")
    if args.artifact and (len(args.route or []) != 1 or args.layout):
        p.error("--artifact needs exactly one --route (the library that reads the folder) "
                "and no --layout (the folder is the layout)")
    if args.artifact and not Path(args.artifact).is_dir():
        p.error(f"--artifact {args.artifact}: no such folder")
    args.stage = args.stage or ["profile", "pipeline"]
    configs = [(name, layout) for name in args.route or list(ROUTES)
               for layout in args.layout or ["ours"]]
    try:
        prepared = [prepare(name, layout, args) for name, layout in configs]
        probe, passes = [], []
        for _ in range(args.passes):  # A B A B, each beside a probe before and after it
            passes.append([])
            for each in prepared:
                probe.append(measure_bandwidth()["bandwidth_gb_s"])
                passes[-1].append(profile(*each, args))
    except Phi3AipcError as err:  # a model or folder that cannot be had: say so, on one line
        print(f"{p.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    probe.append(measure_bandwidth()["bandwidth_gb_s"])
    print(f"Decode step after a {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens "
          f"(the first {args.warmup} left out), greedy, batch 1, {args.passes} interleaved "
          f"pass(es); read-bandwidth probe before each run and after the last: "
          f"{spread(probe, '.1f')} GB/s.")
    # Each configuration's pass with the median model step, in full; then every pass summed up.
    results = [median_pass([run[i] for run in passes]) for i in range(len(prepared))]
    print(table(results, probe))
    rows = summary(passes, probe)
    print("\n" + "\n".join(summary_table(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({"probe_gb_s": probe, "results": results,
                                               "passes": passes, "summary": rows}, indent=2),
                                   encoding="utf-8")
    return 0


def median_pass(runs: list[dict]) -> dict:
    """The run whose model step is the median (the lower middle of an even count)."""
    timed = [r for r in runs if "model_step_ms" in r] or runs
    return sorted(timed, key=lambda r: r.get("model_step_ms", 0))[(len(timed) - 1) // 2]


def spread(values: list[float], fmt: str) -> str:
    """A median with its range, e.g. "12.0 (11.2-13.9)"; one value alone."""
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def summary(passes: list[list[dict]], probe: list[float]) -> list[dict]:
    """Per configuration over the passes: its model step, its share of the probe taken around
    that run (the mean of the probes just before and just after it), and the library's own loop
    (for OpenVINO its default attention backend, PagedAttention, where measured)."""
    rows, width = [], len(passes[0])
    for i, first in enumerate(passes[0]):
        runs = [run[i] for run in passes]
        around = [(probe[k * width + i] + probe[k * width + i + 1]) / 2
                  for k in range(len(passes))]
        row = {"route": first["route"], "layout": first["layout"],
               "prepare_options": first["prepare_options"], "threads": first.get("threads"),
               "weights_read_mb": first["weights_read_mb"]}
        if "model_step_ms" in first:
            row["model_step_ms"] = [r["model_step_ms"] for r in runs]
            row["probe_gb_s"] = around
            row["share_of_probe"] = [r["bandwidth_gb_s"]["weights / model step"] / gb_s
                                     for r, gb_s in zip(runs, around)]
        loops = [(r.get("pipelines") or {}).get("PA") or r.get("pipeline") for r in runs]
        if all(loops):
            row["tpot_ms"] = [loop["tpot_ms"] for loop in loops]
            row["ttft_ms"] = [loop["ttft_ms"] for loop in loops]
        rows.append(row)
    return rows


def summary_table(rows: list[dict]) -> list[str]:
    lines = ["| route, layout | threads | MB read per token | model step, ms per token | "
             "probe around it, GB/s | share of the probe | library's loop, ms per token | "
             "first token, ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda key, fmt: spread(r[key], fmt) if key in r else "-"  # noqa: E731
        share = (spread([100 * v for v in r["share_of_probe"]], ".0f") + " %"
                 if "share_of_probe" in r else "-")
        lines.append(f"| {r['route']}, {r['layout']} {r['prepare_options']} | {r['threads']} | "
                     f"{r['weights_read_mb']:.0f} | {cell('model_step_ms', '.2f')} | "
                     f"{cell('probe_gb_s', '.1f')} | {share} | "
                     f"{cell('tpot_ms', '.2f')} | {cell('ttft_ms', '.0f')} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
