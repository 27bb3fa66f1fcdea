"""The benchmark: every route this PC can run, measured the same way, and its plots.

For each (backend, precision, device) a fresh worker process prepares the model, loads it twice
(cold: first load in the process; warm: a second load), then for each prompt length runs one
warm-up and `reps` timed generations of exactly `new_tokens` tokens (end-of-sequence ignored),
each on a different prompt from data/bench_prompts.json: OpenVINO GenAI reuses work for a
prompt it has seen, which would flatter it. Medians and the min-max spread are reported.

Decode speed is set by how fast the weights stream from memory: every new token reads every
weight once. `weights_read_mb / time per token` over the machine's measured read bandwidth is the
efficiency: how close a route gets to that physical limit.
"""
from __future__ import annotations

import csv
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BadInput, Phi3AipcError
from .standin import DATA, PHI3_MINI_LAYERS

PROMPTS_FILE = DATA / "bench_prompts.json"
LENGTHS = (32, 256, 1024)
DECODE_LENGTH = 256  # the prompt length whose decode speed ranks the routes: a typical turn
EMULATED = "NPU (emulated on CPU)"
CACHE_SIZED_MB = 100  # weights this small may stay in the CPU's caches between tokens


@dataclass(frozen=True)
class BenchConfig:
    """One thing to measure: a route at a precision on a device, with its own options."""

    backend: str
    precision: str
    device: str
    prepare_options: dict = field(default_factory=dict)
    load_options: dict = field(default_factory=dict)

    @property
    def emulated(self) -> bool:
        return bool(self.load_options.get("emulate_npu"))

    @property
    def label(self) -> str:
        device = EMULATED if self.emulated else self.device
        return f"{self.backend} {self.precision} {device}"


def load_prompts() -> dict[int, list[dict]]:
    """Benchmark prompts by length: each {"tokens": N, "text": ...}, all different."""
    data = json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))["prompts"]
    return {int(k): v for k, v in data.items()}


def available_configs(backends: list[str] | None = None, precisions: list[str] | None = None,
                      devices: list[str] | None = None,
                      max_prompt_len: int | None = None) -> list[BenchConfig]:
    """Every (backend, precision, device) this PC can run, narrowed by the filters.

    OpenVINO's NPU pipeline is added emulated on the CPU where there is no NPU (labelled, never
    ranked). ONNX Runtime GenAI's fp16 is a DirectML build, so it is listed only with DirectML.
    The precision "default" stands for each route's own default precision.
    """
    from .backends import REGISTRY, get_backend

    for name in backends or []:
        get_backend(name)  # refuses unknown names
    configs = []
    for name in backends or list(REGISTRY):
        route = get_backend(name)
        if not route.is_installed():
            continue
        here = route.devices_here()
        for device in here:
            for precision in route.precisions:
                if name == "onnxruntime-genai" and (precision == "fp16") != (device == "dml"):
                    continue
                configs.append(BenchConfig(name, precision, device))
        if name == "openvino" and "NPU" not in here:
            configs.append(BenchConfig(name, "int4", "NPU", load_options={
                "emulate_npu": True,
                "max_prompt_len": max_prompt_len or longest_prompt(LENGTHS)}))
    if precisions:
        wanted = [p.lower() for p in precisions]
        configs = [c for c in configs if c.precision in wanted or (
            "default" in wanted and c.precision == get_backend(c.backend).default_precision)]
    if devices:
        wanted = [d.lower() for d in devices]
        configs = [c for c in configs if c.device.lower() in wanted
                   or ("emulated" in wanted and c.emulated)]
    return configs


def run(configs: list[BenchConfig], model: str | None = None, reps: int = 3,
        new_tokens: int = 64, lengths: tuple[int, ...] = LENGTHS, progress: bool = True,
        bandwidth: bool = True) -> dict:
    """Measure every config, each in its own process; return the report (see `write`)."""
    from tqdm.auto import tqdm

    from .models import resolve_model

    prompts = load_prompts()
    lengths = tuple(dict.fromkeys(lengths))  # each length once: its prompts are used once
    if reps < 1 or reps + 1 > min(len(prompts[n]) for n in prompts):
        raise BadInput(f"reps must be 1-{min(len(v) for v in prompts.values()) - 1} (one "
                       f"distinct prompt per run, plus one for the warm-up); got {reps}.")
    if new_tokens < 2:
        raise BadInput(f"new_tokens must be at least 2 to time decoding; got {new_tokens}.")
    unknown = [n for n in lengths if n not in prompts]
    if unknown:
        raise BadInput(f"No benchmark prompts of {unknown} tokens; data/bench_prompts.json has "
                       f"{', '.join(map(str, prompts))}.")
    if not configs:
        raise BadInput("Nothing to measure: no installed route matches the filters. See "
                       "`phi3-aipc doctor`.")
    source = resolve_model(model, progress)  # built or downloaded once, before the workers
    longest = longest_prompt(lengths)
    context = model_context(source.path)
    if context and longest + new_tokens > context:
        raise BadInput(f"The longest benchmark prompt ({longest} tokens) plus {new_tokens} new "
                       f"tokens exceed {source.name}'s context window of {context}. Lower "
                       "--new-tokens or drop the longest --lengths.")
    report = {"machine": machine(bandwidth), "model": source.name,
              "settings": {"reps": reps, "new_tokens": new_tokens, "lengths": list(lengths),
                           "warmup": 1, "decode_length": decode_length(lengths)},
              "results": []}
    bar = tqdm(total=len(configs) * len(lengths) * (reps + 1), desc="Benchmark", unit="run",
               disable=not progress)
    for config in configs:
        bar.set_description(config.label)
        spec = {"config": asdict(config), "model": source.name, "reps": reps,
                "new_tokens": new_tokens, "lengths": list(lengths)}
        on_event = lambda event: bar.update(1) if event == "run" else \
            bar.set_postfix_str(event)  # noqa: E731
        # An export loads its result to check it: done in a process of its own, so that the
        # measuring process's first load really is its first.
        result = run_worker({**spec, "prepare_only": True}, on_event)
        if "error" not in result:
            result = run_worker({**spec, "prepare_s": result["prepare_s"]}, on_event)
        result.update(config=config.label, emulated=config.emulated)
        for key in ("backend", "precision", "device"):
            result.setdefault(key, getattr(config, key))
        if result.get("device_note") and not config.emulated:  # e.g. the NPU library on a CPU
            result["config"] = f"{config.backend} {result['precision']} {result['device']}"
        add_derived(result, report["machine"].get("bandwidth_gb_s"), source.name,
                    report["settings"]["decode_length"])
        report["results"].append(result)
    bar.close()
    report["fastest"] = fastest(report["results"])
    return report


def longest_prompt(lengths) -> int:
    """The most tokens any benchmark prompt of these lengths has (some run a token or two over)."""
    prompts = load_prompts()
    return max(p["tokens"] for n in lengths for p in prompts.get(n, [{"tokens": n}]))


def model_context(folder: Path) -> int | None:
    config = folder / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    return None


def decode_length(lengths) -> int:
    return DECODE_LENGTH if DECODE_LENGTH in lengths else min(lengths)


def run_worker(spec: dict, on_event) -> dict:
    """Run one config in a new Python process; relay its messages; return its result."""
    proc = subprocess.Popen([sys.executable, "-m", "phi3_aipc.bench", "--worker",
                             json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace",
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    tail: list[str] = []

    def relay() -> None:  # export progress and warnings, shown where the caller looks
        for line in proc.stderr:
            tail.append(line)
            del tail[:-20]
            sys.stderr.write(line)

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    result = None
    try:
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # something a library printed: pass it on
                sys.stderr.write(line)
                continue
            if "event" in message:
                on_event(message["event"])
            else:
                result = message
    except BaseException:
        proc.kill()
        raise
    proc.wait()
    relay_thread.join(timeout=5)
    if result is None:
        result = {"error": f"the worker ended with exit code {proc.returncode}: "
                           f"{''.join(tail[-3:]).strip()}"}
    return result


def measure(spec: dict, emit) -> dict:
    """In the worker: prepare, load cold and warm, and time the generations of one config."""
    from .backends import get_backend, prepare_artifact
    from .cache import folder_size_mb

    config = BenchConfig(**spec["config"])
    route = get_backend(config.backend)
    route.check_options(config.prepare_options, config.load_options)
    precision, device = route.check(config.precision, config.device)
    route.check_load(device, **config.load_options)
    emit("preparing")
    start = time.perf_counter()
    source, artifact = prepare_artifact(route, precision, device, spec["model"],
                                        dict(config.prepare_options), progress=False)
    prepare_s = time.perf_counter() - start
    if spec.get("prepare_only"):
        return {"prepare_s": round(prepare_s, 2)}
    prepare_s = spec.get("prepare_s", prepare_s)
    read_mb, head_mb, how = weights_read_mb(config.backend, precision, artifact)

    emit("loading")
    loads = []
    for _ in range(2):  # cold, then warm
        start = time.perf_counter()
        session = route.load(artifact, device, precision, source.name, **config.load_options)
        loads.append(time.perf_counter() - start)
        if len(loads) == 1:
            close(session)
            del session
            gc.collect()

    emit("timing")
    prompts = load_prompts()
    lengths = {}
    peak = 0.0
    for n in spec["lengths"]:
        runs, used = [], []
        for i in range(spec["reps"] + 1):  # the first is the warm-up, discarded
            messages = [{"role": "user", "content": prompts[n][i]["text"]}]
            r = session.generate(messages, max_new_tokens=spec["new_tokens"], greedy=True,
                                 ignore_eos=True)
            emit("run")
            if len(r.token_ids) != spec["new_tokens"]:
                raise Phi3AipcError(f"{config.label} generated {len(r.token_ids)} tokens, not "
                                    f"{spec['new_tokens']}, with end-of-sequence ignored.")
            peak = max(peak, r.metrics.peak_rss_mb or 0)
            if i:
                runs.append(r)
                used.append(i)
        lengths[str(n)] = {
            "prompt_tokens": runs[0].prompt_tokens,
            "prompts": used,  # which of data/bench_prompts.json's prompts the timed runs used
            "warmup_prompt": 0,
            "ttft_ms": spread([r.metrics.ttft_ms for r in runs]),
            "tpot_ms": spread([r.metrics.tpot_ms for r in runs]),
        }
    return {"backend": config.backend, "precision": precision, "device": session.device,
            "device_note": session.device_note, "model": source.name,
            "artifact": str(artifact), "artifact_mb": round(folder_size_mb(artifact), 1),
            "weights_read_mb": round(read_mb, 1), "output_layer_mb": round(head_mb, 1),
            "weights_read_from": how,
            "prepare_s": round(prepare_s, 2), "load_cold_s": round(loads[0], 3),
            "load_warm_s": round(loads[1], 3), "peak_rss_mb": round(peak, 1),
            "lengths": lengths}


def close(session) -> None:
    if hasattr(session, "close"):
        session.close()


def spread(values: list[float]) -> dict:
    """Median and range of repeated measurements (ms), and the runs themselves."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def add_derived(result: dict, bandwidth_gb_s: float | None, model: str, at: int) -> None:
    """Decode figures at the ranking prompt length, bandwidth efficiency, and for the bench
    stand-in an estimate for Phi-3-mini's full 32 layers."""
    if "error" in result:
        return
    row = result["lengths"][str(at)]
    tpot = row["tpot_ms"]["median"]
    result["decode"] = {"prompt_tokens": row["prompt_tokens"], "tpot_ms": tpot,
                        "tokens_per_s": round(1000 / tpot, 2)}
    if bandwidth_gb_s:
        achieved = result["weights_read_mb"] / 1000 / (tpot / 1000)  # GB/s
        result["decode"]["achieved_gb_s"] = round(achieved, 2)
        result["decode"]["efficiency"] = round(achieved / bandwidth_gb_s, 3)
    layers = stand_in_layers(model)
    if layers:
        head, read = result["output_layer_mb"], result["weights_read_mb"]
        scale = (head + (read - head) * PHI3_MINI_LAYERS / layers) / read
        prefill = PHI3_MINI_LAYERS / layers
        result["estimate_32_layers"] = {
            "note": "estimate, not measured: time per token scaled by the weights a full "
                    "Phi-3-mini reads per token (the output layer once, the layers 32 times), "
                    "time to first token by the layer count",
            "tpot_scale": round(scale, 3), "ttft_scale": round(prefill, 3),
            "tpot_ms": round(tpot * scale, 1), "tokens_per_s": round(1000 / (tpot * scale), 2),
            "ttft_ms": {n: round(v["ttft_ms"]["median"] * prefill, 1)
                        for n, v in result["lengths"].items()}}


def stand_in_layers(model: str) -> int | None:
    """The layer count of a bench stand-in `model`, None for any other model."""
    from .models import BENCH_STAND_IN, bench_layers

    return bench_layers(model) if model.split(":")[0] == BENCH_STAND_IN else None


def fastest(results: list[dict]) -> dict | None:
    """The route with the shortest time per token; emulated pipelines are never ranked."""
    ranked = [r for r in results if "decode" in r and not r.get("emulated")]
    if not ranked:
        return None
    best = min(ranked, key=lambda r: r["decode"]["tpot_ms"])
    return {"config": best["config"], "tpot_ms": best["decode"]["tpot_ms"],
            "tokens_per_s": best["decode"]["tokens_per_s"],
            "weights_read_mb": best["weights_read_mb"],
            "why": explain(best, ranked)}


def explain(best: dict, ranked: list[dict]) -> str:
    """Why the fastest route won: fewer bytes per token, or streaming them faster."""
    least = min(ranked, key=lambda r: r["weights_read_mb"])
    eff = best["decode"].get("efficiency")
    text = (f"It reads {best['weights_read_mb']:.0f} MB of weights per token"
            + (f" at {eff:.0%} of the measured memory bandwidth" if eff else ""))
    if least is best:
        text += ", the fewest bytes per token of all routes."
    else:
        text += (f"; {least['config']} reads fewer ({least['weights_read_mb']:.0f} MB) but "
                 "streams them more slowly.")
    if best["weights_read_mb"] < CACHE_SIZED_MB:
        return text + (" These weights fit in the CPU's caches, so this ranks per-token "
                       "overheads rather than memory speed: for real-size kernels use "
                       "--model bench-stand-in (or the real model).")
    return text + (" Each new token reads every weight once, so decoding is bound by memory "
                   "bandwidth: fewer bytes per token, or a larger share of the bandwidth, "
                   "means more tokens/s.")


# --- what the machine is --------------------------------------------------------------------

def machine(bandwidth: bool = True) -> dict:
    """The machine's description: CPU, cores, memory, instruction sets, package versions, and
    its measured memory read bandwidth."""
    from .hardware import doctor

    report = doctor()
    info = {k: report[k] for k in ("os", "python", "cpu", "memory_gb", "packages")}
    info["cpu"]["instruction_sets"] = instruction_sets()
    info["openvino_devices"] = [d["name"] for d in report["openvino"]["devices"]]
    info["npu_library"] = {k: report["npu_library"].get(k) for k in ("installed", "npu_available")}
    if bandwidth:
        info.update(measure_bandwidth())
    return info


def instruction_sets() -> list[str]:
    """The vector extensions that decide CPU kernel speed (Linux; OpenVINO's view elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set()
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        wanted = ["avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
        return [f for f in wanted if f in flags]
    try:
        import openvino as ov

        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # no OpenVINO: nothing to say
        return []


def measure_bandwidth(size_mb: int = 512, repeats: int = 7) -> dict:
    """Memory read bandwidth with all cores: the best of `repeats` sums over a buffer far larger
    than any cache. torch's multi-threaded sum is vectorized; on the machines tried it matched a
    hand-written AVX2 loop (numpy's sum is single-threaded and reads less)."""
    import torch

    buffer = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    buffer.sum()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return {"bandwidth_gb_s": round(buffer.numel() * 4 / best / 1e9, 2),
            "bandwidth_method": f"torch.sum over {size_mb} MB of fp32, "
                                f"{torch.get_num_threads()} threads, best of {repeats}"}


# --- weights read per generated token ---------------------------------------------------------

def weights_read_mb(backend: str, precision: str, artifact: Path) -> tuple[float, float, str]:
    """MB of weights one decoding step reads: every weight except the embedding table (a token
    reads one row of it); and of those, the output layer's. Counted from the artifact's own
    tensors where the format allows."""
    if backend == "openvino":
        total, embedding, head = openvino_weights(artifact)
        how = "OpenVINO IR constants"
    elif backend == "onnxruntime-genai":
        total, embedding, head = onnx_weights(artifact)
        how = "ONNX initializers"
    else:
        params, embedding_params, head_params = safetensors_params(artifact)
        per_weight = {"fp32": 4, "fp16": 2, "int8": 1, "int4": 0.5}[precision]
        if backend == "transformers":
            per_weight = 4  # loaded as fp32 whatever the checkpoint's type
        total, embedding, head = (n * per_weight for n in (params, embedding_params, head_params))
        how = f"parameter count x {per_weight} bytes (estimate: the library quantizes in memory)"\
            if backend != "transformers" else "parameter count x 4 bytes (fp32)"
    return (total - embedding) / 1e6, head / 1e6, how


def openvino_weights(folder: Path) -> tuple[int, int, int]:
    """Bytes of all constants of the IR, of those behind the embedding lookup, and of those of
    the output layer (the other constants with a vocabulary-sized first dimension)."""
    import openvino as ov

    model = ov.Core().read_model(str(folder / "openvino_model.xml"))
    vocab = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    constants = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    embedding: set[str] = set()
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        found, stack = set(), [op.input_value(0).get_node()]
        while stack:  # walk up through the decompression ops to the stored constants
            node = stack.pop()
            if node.get_friendly_name() in found:
                continue
            if node.get_type_name() == "Constant":
                found.add(node.get_friendly_name())
            elif node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
                stack += [value.get_node() for value in node.input_values()]
        if sum(c.get_byte_size() for c in constants if c.get_friendly_name() in found) > \
                sum(c.get_byte_size() for c in constants if c.get_friendly_name() in embedding):
            embedding = found
    vocab_sized = [c for c in constants if c.get_friendly_name() not in embedding
                   and list(c.get_output_shape(0))[:1] == [vocab]]
    return (sum(c.get_byte_size() for c in constants),
            sum(c.get_byte_size() for c in constants if c.get_friendly_name() in embedding),
            sum(c.get_byte_size() for c in vocab_sized))


def onnx_weights(folder: Path) -> tuple[int, int, int]:
    """Bytes of all initializers of the ONNX model, of the embedding lookup's, and of the
    output layer's (the builder names them lm_head.*)."""
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
             for t in model.graph.initializer}
    embedding = max((sum(sizes.get(i, 0) for i in node.input) for node in model.graph.node
                     if node.op_type in ("Gather", "GatherBlockQuantized")), default=0)
    head = sum(size for name, size in sizes.items() if name.startswith("lm_head"))
    return sum(sizes.values()), embedding, head


def safetensors_params(folder: Path) -> tuple[int, int, int]:
    """Parameter counts of a checkpoint: all, the embedding table's, the output layer's."""
    import math
    import struct

    total = embedding = head = 0
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            n = math.prod(tensor["shape"])
            total += n
            if name.endswith("embed_tokens.weight"):
                embedding += n
            elif name.startswith("lm_head."):
                head += n
    return total, embedding, head


# --- output -----------------------------------------------------------------------------------

CSV_FIELDS = ["config", "backend", "precision", "device", "emulated", "model", "prompt_tokens",
              "new_tokens", "reps", "ttft_ms_median", "ttft_ms_min", "ttft_ms_max",
              "tpot_ms_median", "tpot_ms_min", "tpot_ms_max", "tokens_per_s", "artifact_mb",
              "weights_read_mb", "efficiency", "load_cold_s", "load_warm_s", "peak_rss_mb",
              "bandwidth_gb_s", "cpu", "error"]


def rows(report: dict) -> list[dict]:
    """One flat row per (config, prompt length): the CSV and the notebook's table."""
    out = []
    settings, bw = report["settings"], report["machine"].get("bandwidth_gb_s")
    for r in report["results"]:
        base = {"config": r["config"], "backend": r.get("backend"),
                "precision": r.get("precision"), "device": r.get("device"),
                "emulated": r.get("emulated"), "model": report["model"],
                "new_tokens": settings["new_tokens"], "reps": settings["reps"],
                "bandwidth_gb_s": bw, "cpu": report["machine"]["cpu"]["model"]}
        if "error" in r:
            out.append({**base, "error": r["error"]})
            continue
        for n, v in r["lengths"].items():
            tpot = v["tpot_ms"]["median"]
            achieved = r["weights_read_mb"] / tpot  # MB/ms = GB/s
            out.append({**base, "prompt_tokens": v["prompt_tokens"],
                        "ttft_ms_median": v["ttft_ms"]["median"],
                        "ttft_ms_min": v["ttft_ms"]["min"], "ttft_ms_max": v["ttft_ms"]["max"],
                        "tpot_ms_median": tpot, "tpot_ms_min": v["tpot_ms"]["min"],
                        "tpot_ms_max": v["tpot_ms"]["max"],
                        "tokens_per_s": round(1000 / tpot, 2),
                        "artifact_mb": r["artifact_mb"], "weights_read_mb": r["weights_read_mb"],
                        "efficiency": round(achieved / bw, 3) if bw else None,
                        "load_cold_s": r["load_cold_s"], "load_warm_s": r["load_warm_s"],
                        "peak_rss_mb": r["peak_rss_mb"]})
    return out


def write(report: dict, json_path: Path | None = None, csv_path: Path | None = None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows(report))


def table(report: dict) -> str:
    """A Markdown table of the decode figures per config, for a terminal or the README."""
    at = report["settings"]["decode_length"]
    lengths = report["settings"]["lengths"]
    head = (["config", "size MB", "read/token MB"] + [f"TTFT@{n} ms" for n in lengths]
            + [f"ms/token@{at}", "tokens/s", "efficiency", "load cold/warm s", "peak MB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['config']} | skipped: {r['error']} |")
            continue
        d = r["decode"]
        eff = f"{d['efficiency']:.0%}" if "efficiency" in d else "n/a"
        cells = ([r["config"], f"{r['artifact_mb']:.0f}", f"{r['weights_read_mb']:.0f}"]
                 + [fmt_spread(r["lengths"][str(n)]["ttft_ms"]) for n in lengths]
                 + [fmt_spread(r["lengths"][str(at)]["tpot_ms"]), f"{d['tokens_per_s']:.1f}",
                    eff, f"{r['load_cold_s']:.1f}/{r['load_warm_s']:.1f}",
                    f"{r['peak_rss_mb']:.0f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_spread(s: dict) -> str:
    digits = 1 if s["median"] < 100 else 0
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def summary(report: dict) -> str:
    """What a person should take away: the table, the fastest route and why, the caveats."""
    m = report["machine"]
    lines = [f"Machine: {m['cpu']['model']}, {m['cpu']['cores']} cores, "
             f"{m['memory_gb']['total']} GB; memory read bandwidth "
             + (f"{m['bandwidth_gb_s']} GB/s ({m['bandwidth_method']})"
                if m.get("bandwidth_gb_s") else "not measured"),
             f"Model: {report['model']}; {report['settings']['reps']} runs per length after a "
             f"warm-up, {report['settings']['new_tokens']} new tokens each; median (min-max).",
             "", table(report), ""]
    best = report.get("fastest")
    if best:
        lines.append(f"Fastest here: {best['config']}, {best['tokens_per_s']:.1f} tokens/s. "
                     f"{best['why']}")
    for r in report["results"]:
        if r.get("emulated"):
            lines.append(f"{r['config']}: OpenVINO's NPU pipeline with the CPU doing the work; "
                         "not NPU timings, so not ranked.")
        elif r.get("device_note"):
            lines.append(f"{r['config']}: {r['device_note']}")
        if "estimate_32_layers" in r:
            e = r["estimate_32_layers"]
            lines.append(f"{r['config']}: full Phi-3-mini (32 layers) estimate "
                         f"{e['tpot_ms']:.0f} ms/token, {e['tokens_per_s']:.1f} tokens/s "
                         "(estimate, scaled by weights read, not measured)")
    return "\n".join(lines)


def plot(report: dict):
    """Two charts: time to first token by prompt length, and decode tokens/s, per config."""
    import matplotlib.pyplot as plt

    done = [r for r in report["results"] if "error" not in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in done:
        xs = [v["prompt_tokens"] for v in r["lengths"].values()]
        ys = [v["ttft_ms"]["median"] for v in r["lengths"].values()]
        left.plot(xs, ys, marker="o", linestyle="--" if r.get("emulated") else "-",
                  label=r["config"])
    left.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="ms (median)",
             title="Time to first token")
    left.legend(fontsize=8)
    names = [r["config"] for r in done]
    speeds = [r["decode"]["tokens_per_s"] for r in done]
    bars = right.barh(names, speeds, color=["#bbb" if r.get("emulated") else "#1f77b4"
                                            for r in done])
    right.bar_label(bars, fmt="%.1f", fontsize=8)
    right.invert_yaxis()
    right.set(xlabel=f"tokens/s (median, prompt {report['settings']['decode_length']} tokens)",
              title="Decode speed (grey: emulated, not ranked)")
    fig.suptitle(f"{report['model']} on {report['machine']['cpu']['model']}")
    fig.tight_layout()
    return fig


# --- the worker process -----------------------------------------------------------------------

def worker_main(spec_json: str) -> int:
    """Measure one config; JSON lines on stdout: {"event": ...} as it goes, then the result."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    # Only the protocol goes to the real stdout: whatever a library prints, from Python or from
    # C++, goes to stderr, which the parent passes on.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(event: str) -> None:
        out.write(json.dumps({"event": event}) + "\n")
        out.flush()

    try:
        result = measure(json.loads(spec_json), emit)
    except Phi3AipcError as err:
        result = {"error": " ".join(str(err).split())}
    except Exception as err:  # a route that breaks must not take the benchmark down with it
        result = {"error": f"{type(err).__name__}: {' '.join(str(err).split())}"[:500]}
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(worker_main(sys.argv[2]))
    sys.exit("This module's worker is started by `phi3-aipc bench`.")
