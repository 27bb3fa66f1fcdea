"""The measuring process: one configuration, prepared, loaded cold and warm, and timed.

    python -m phi3_aipc.bench.worker SPEC_JSON

Started by `run.py`, one process per configuration, so that its first load and its peak memory
are its own. It speaks the JSON-lines protocol of `phi3_aipc.processes`: {"event": ...} lines
as it goes, then the result.
"""
from __future__ import annotations

import gc
import json
import statistics
import sys
import time

from ..cache import folder_size_mb
from ..errors import Phi3AipcError
from ..processes import protocol_sender
from ..routes import GenerationRequest, get_route, prepare_artifact
from .configs import BenchConfig, load_prompts


def measure(spec: dict, emit) -> dict:
    """Prepare, load cold and warm, and time the generations of one config."""
    config = BenchConfig(**spec["config"])
    route = get_route(config.route)
    plan = route.plan(config.precision, config.device, config.prepare_options,
                      config.load_options)
    emit("preparing")
    start = time.perf_counter()
    source, artifact = prepare_artifact(plan, spec["model"], progress=False)
    prepare_s = time.perf_counter() - start
    if spec.get("prepare_only"):
        return {"prepare_s": round(prepare_s, 2)}
    prepare_s = spec.get("prepare_s", prepare_s)
    read = route.weights_read(artifact, plan.precision)

    emit("loading")
    loads = []
    for _ in range(2):  # cold, then warm
        start = time.perf_counter()
        session = route.load(plan, artifact, source.name)
        loads.append(time.perf_counter() - start)
        if len(loads) == 1:
            session.close()
            del session
            gc.collect()

    emit("timing")
    prompts = load_prompts()
    request = GenerationRequest(max_new_tokens=spec["new_tokens"], greedy=True,
                                ignore_eos=True)
    lengths = {}
    peak = 0.0
    with session:
        for n in spec["lengths"]:
            runs, used = [], []
            for i in range(spec["reps"] + 1):  # the first is the warm-up, discarded
                messages = [{"role": "user", "content": prompts[n][i]["text"]}]
                r = session.generate(messages, request)
                emit("run")
                if len(r.token_ids) != spec["new_tokens"]:
                    raise Phi3AipcError(f"{config.label} generated {len(r.token_ids)} tokens, "
                                        f"not {spec['new_tokens']}, with end-of-sequence "
                                        "ignored.")
                peak = max(peak, r.metrics.peak_rss_mb or 0)
                if i:
                    runs.append(r)
                    used.append(i)
            lengths[str(n)] = {
                "prompt_tokens": runs[0].prompt_tokens,
                "prompts": used,  # which of data/bench_prompts.json's prompts the runs used
                "warmup_prompt": 0,
                "ttft_ms": spread([r.metrics.ttft_ms for r in runs]),
                "tpot_ms": spread([r.metrics.tpot_ms for r in runs]),
            }
    return {"backend": config.route, "precision": plan.precision, "device": session.device,
            "device_note": session.device_note, "model": source.name,
            "artifact": str(artifact), "artifact_mb": round(folder_size_mb(artifact), 1),
            "weights_read_mb": round(read.total_mb, 1),
            "output_layer_mb": round(read.output_layer_mb, 1), "weights_read_from": read.how,
            "prepare_s": round(prepare_s, 2), "load_cold_s": round(loads[0], 3),
            "load_warm_s": round(loads[1], 3), "peak_rss_mb": round(peak, 1),
            "lengths": lengths}


def spread(values: list[float]) -> dict:
    """Median and range of repeated measurements (ms), and the runs themselves."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def main(spec_json: str) -> int:
    """Measure one config; a route that breaks becomes an error result, not a dead benchmark."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    send = protocol_sender()
    try:
        result = measure(json.loads(spec_json), lambda event: send(event=event))
    except Phi3AipcError as err:
        result = {"error": " ".join(str(err).split())}
    except Exception as err:
        result = {"error": f"{type(err).__name__}: {' '.join(str(err).split())}"[:500]}
    send(**result)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("This worker is started by `phi3-aipc bench`.")
    sys.exit(main(sys.argv[1]))
