"""Choose each route's CPU defaults by measurement: the fastest settings that keep every reply.

For each candidate setting:
- speed: time to first token and time per output token on the bench stand-in (Phi-3-mini's
  layer shapes, 4 layers), 256-token prompts, 64 new tokens, one warm-up then REPS runs, each on
  a different prompt; medians;
- quality: the memorized stand-in with the same setting must still give all its fixed replies
  (greedy), as the tests demand of the defaults; and `phi3_aipc.quality` on it (top-1 agreement
  and mean KL against the fp32 reference over the bundled text: stand-in figures, which say
  what the setting does to these weights, not to Phi-3's);
- bytes: the weights one generated token reads from the bench artifact (`Route.weights_read`:
  all but the embedding table, one row of which a token reads), and of those the output layer's,
  so that a faster setting that reads less is visible as such.

Export-time settings go through `phi3_aipc` (prepare with options); OpenVINO's load-time
properties (KV-cache precision, dynamic quantization, threads) are passed to `LLMPipeline`.
OpenVINO's load-time properties are tried on the default export. docs/benchmark.md ('How the
defaults were chosen') shows this script's tables.

    python scripts/sweep_defaults.py [--route openvino|onnxruntime-genai] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from phi3_aipc import quality
from phi3_aipc.bench import load_prompts
from phi3_aipc.models import resolve_model
from phi3_aipc.routes import get_route, prepare_artifact
from phi3_aipc.routes.base import WeightsRead
from phi3_aipc.standin import load_chats

ORT_BUILDS = [{"block_size": 32, "accuracy_level": 4}, {"block_size": 64, "accuracy_level": 4},
              {"block_size": 128, "accuracy_level": 4}, {"block_size": 32, "accuracy_level": 1}]
# The default first; all_layers: int4 also for the embedding and output layers (int8 otherwise).
OV_EXPORTS = [{"group_size": -1}, {"group_size": -1, "all_layers": True}, {"group_size": 128},
              {"group_size": 64}]
OV_PROPERTIES = [{}, {"KV_CACHE_PRECISION": "f16"}, {"KV_CACHE_PRECISION": "f32"},
                 {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}, {"INFERENCE_NUM_THREADS": 1}]


def prompts(reps: int) -> list[list[dict]]:
    return [[{"role": "user", "content": p["text"]}] for p in load_prompts()[256][:reps + 1]]


def quality_of(session, tiny_model) -> dict:
    """Top-1 agreement and mean KL of `session` against the fp32 reference (stand-in figures)."""
    from transformers import AutoTokenizer

    chunks = quality.windows(AutoTokenizer.from_pretrained(tiny_model.path))
    reference = quality.reference(tiny_model, chunks, quality.TOKENS, quality.WINDOW, False)
    return quality.compare(session, chunks, reference)


def openvino_rows(bench_model, tiny_model, reps: int) -> list[dict]:
    import openvino_genai as ov_genai

    from phi3_aipc.routes.openvino import OpenVINOSession

    route = get_route("openvino")
    rows = []
    plan = lambda export: route.plan("int4", "CPU", export)  # noqa: E731
    candidates = [(e, {}) for e in OV_EXPORTS] + [(OV_EXPORTS[0], p) for p in OV_PROPERTIES[1:]]
    for export, properties in candidates:
        timings = []
        _, folder = prepare_artifact(plan(export), bench_model)  # speed
        read = route.weights_read(folder, "int4")
        pipe = ov_genai.LLMPipeline(str(folder), "CPU", **properties)
        config = pipe.get_generation_config()
        config.max_new_tokens, config.ignore_eos = 64, True
        for i, messages in enumerate(prompts(reps)):
            m = pipe.generate(ov_genai.ChatHistory(messages), config).perf_metrics
            if i:
                timings.append((m.get_ttft().mean, m.get_tpot().mean))
        del pipe
        _, folder = prepare_artifact(plan(export), tiny_model)  # the replies, the figures
        session = OpenVINOSession(plan(export), folder, tiny_model.name, properties=properties)
        chats = load_chats()
        kept = sum(session.generate(c["messages"], max_new_tokens=64, greedy=True).text
                   == c["reply"] for c in chats)
        figures = quality_of(session, tiny_model)
        session.close()
        rows.append(row("openvino int4", {**export, **properties}, timings, kept, len(chats),
                        read, figures))
    return rows


def onnxruntime_genai_rows(bench_model, tiny_model, reps: int) -> list[dict]:
    route = get_route("onnxruntime-genai")
    rows = []
    for options in ORT_BUILDS:
        timings = []
        plan = route.plan("int4", "cpu", options)
        _, folder = prepare_artifact(plan, bench_model)
        read = route.weights_read(folder, "int4")
        session = route.load(plan, folder, bench_model.name)
        for i, messages in enumerate(prompts(reps)):
            r = session.generate(messages, max_new_tokens=64, greedy=True, ignore_eos=True)
            if i:
                timings.append((r.metrics.ttft_ms, r.metrics.tpot_ms))
        _, folder = prepare_artifact(plan, tiny_model)
        session = route.load(plan, folder, tiny_model.name)
        chats = load_chats()
        kept = sum(session.generate(c["messages"], max_new_tokens=64, greedy=True).text.strip()
                   == c["reply"] for c in chats)
        rows.append(row("onnxruntime-genai int4", options, timings, kept, len(chats), read,
                        quality_of(session, tiny_model)))
    return rows


def row(route: str, setting: dict, timings: list[tuple[float, float]], kept: int,
        total: int, read: WeightsRead, figures: dict) -> dict:
    tpot = statistics.median(t for _, t in timings)
    return {"route": route, "setting": setting or {"(library defaults)": ""},
            "read_mb": round(read.total_mb), "output_layer_mb": round(read.output_layer_mb),
            "ttft_ms": round(statistics.median(t for t, _ in timings), 1),
            "tpot_ms": round(tpot, 2), "tpot_range": [round(min(t for _, t in timings), 2),
                                                      round(max(t for _, t in timings), 2)],
            "tokens_per_s": round(1000 / tpot, 1), "replies_kept": f"{kept}/{total}",
            "top1_agreement": round(figures["top1_agreement"], 4),
            "mean_kl": round(figures["mean_kl"], 5)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--route", action="append", choices=["openvino", "onnxruntime-genai"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if not 1 <= args.reps <= 5:
        p.error("--reps must be 1-5: data/bench_prompts.json has 6 prompts per length "
                "(one warm-up, then one prompt per run)")
    bench_model, tiny_model = resolve_model("bench-stand-in"), resolve_model("stand-in")
    rows = []
    for route in args.route or ["openvino", "onnxruntime-genai"]:
        sweep = openvino_rows if route == "openvino" else onnxruntime_genai_rows
        rows += sweep(bench_model, tiny_model, args.reps)
        if args.json:  # after each route, so that an interrupted sweep keeps what it measured
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(rows, f, indent=2)
    print(f"\nbench stand-in (4 layers), 256-token prompts, 64 new tokens, median of {args.reps}")
    print("| route | setting | weights read per token MB (output layer) | TTFT ms | "
          "ms/token (range) | tokens/s | stand-in replies kept | stand-in top-1 agreement, "
          "mean KL |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        setting = ", ".join(f"{k}={v}" if v != "" else k for k, v in r["setting"].items())
        lo, hi = r["tpot_range"]
        print(f"| {r['route']} | {setting} | {r['read_mb']} ({r['output_layer_mb']}) | "
              f"{r['ttft_ms']:.0f} | {r['tpot_ms']:.1f} "
              f"({lo:.1f}-{hi:.1f}) | {r['tokens_per_s']:.1f} | {r['replies_kept']} | "
              f"{r['top1_agreement']:.1%}, {r['mean_kl']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
