"""What does phi3_aipc cost per token? Time per output token through the package vs a raw loop.

For OpenVINO GenAI and ONNX Runtime GenAI, the same artifact is loaded twice on the same device
(for ONNX Runtime GenAI, DirectML where it is installed): once through `phi3_aipc` (a Session),
once with only the route's own library (LLMPipeline with a text streamer; og.Generator with a
tokenizer stream, as in the libraries' samples). Both stream text, greedy, end-of-sequence
ignored the same way (on DirectML with min_length: it cannot take a stop token back). Time per
output token is measured from outside, the same way for both: (wall time for SHORT+EXTRA new
tokens - wall time for SHORT) / EXTRA, so prompt processing cancels out. Runs alternate between
the two, each on a prompt no run has used before. Target: ratio <= 1.02.

    python scripts/bench_overhead.py                      # bench stand-in: real layer shapes
    python scripts/bench_overhead.py --model stand-in --extra 32 --reps 2   # a quick check
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from phi3_aipc.bench import load_prompts
from phi3_aipc.models import resolve_model
from phi3_aipc.routes import get_route, prepare_artifact

TARGET = 1.02


def raw_openvino(artifact, device: str):
    import openvino_genai as ov_genai

    pipe = ov_genai.LLMPipeline(str(artifact), device)

    def generate(messages: list[dict], n: int) -> None:
        config = ov_genai.GenerationConfig()
        config.max_new_tokens, config.ignore_eos, config.do_sample = n, True, False
        pipe.generate(ov_genai.ChatHistory(messages), config,
                      lambda text: ov_genai.StreamingStatus.RUNNING)

    return generate


def raw_onnxruntime_genai(artifact, device: str):
    import onnxruntime_genai as og

    from phi3_aipc.routes.onnxruntime_genai import continuous_decoding, cpu_overlay

    config = og.Config(str(artifact))
    config.clear_providers()
    if device == "dml":  # the provider the package's session runs on
        config.append_provider("dml")
    elif overlay := cpu_overlay():  # the same threads as the package's session
        config.overlay(overlay)
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    # Ignoring EOS as the package does: feed a stop token back where a live generator takes
    # more tokens; elsewhere (DirectML) min_length keeps it from picking one.
    feed_back = continuous_decoding(device)

    def generate(messages: list[dict], n: int) -> None:
        text = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        prompt = tokenizer.encode(text)
        params = og.GeneratorParams(model)
        search = dict(max_length=len(prompt) + n, do_sample=False)
        if not feed_back:
            search["min_length"] = search["max_length"]
        params.set_search_options(**search)
        generator = og.Generator(model, params)
        generator.append_tokens(prompt)
        stream = tokenizer.create_stream()
        token = None
        for _ in range(n):
            if generator.is_done():  # a stop token: feed it back, as ignoring EOS means
                generator.append_tokens([token])
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            stream.decode(token)

    return generate


RAW = {"openvino": raw_openvino, "onnxruntime-genai": raw_onnxruntime_genai}


def measure(route_name: str, model: str, short: int, extra: int, reps: int) -> dict:
    route = get_route(route_name)
    plan = route.plan()
    source, artifact = prepare_artifact(plan, model, progress=True)
    session = route.load(plan, artifact, source.name)
    ours = lambda messages, n: session.generate(  # noqa: E731
        messages, max_new_tokens=n, greedy=True, ignore_eos=True, streamer=lambda text: None)
    raw = RAW[route_name](artifact, plan.device)
    texts = [p["text"] for p in load_prompts()[256]]
    times = {"phi3_aipc": {short: [], short + extra: []}, "raw": {short: [], short + extra: []}}
    run = 0
    for rep in range(reps + 1):  # the first round warms up and is discarded
        order = [("phi3_aipc", ours), ("raw", raw)]
        for name, generate in order if rep % 2 else order[::-1]:
            for n in (short, short + extra):
                run += 1  # every run gets a prompt of its own
                messages = [{"role": "user", "content": f"({run}) {texts[run % len(texts)]}"}]
                start = time.perf_counter()
                generate(messages, n)
                if rep:
                    times[name][n].append(time.perf_counter() - start)
    per_rep = {name: [(long - short_) * 1000 / extra for short_, long in
                      zip(t[short], t[short + extra])] for name, t in times.items()}
    ratios = [a / b for a, b in zip(per_rep["phi3_aipc"], per_rep["raw"])]
    tpot = {name: statistics.median(v) for name, v in per_rep.items()}
    return {"route": route_name, "precision": plan.precision, "model": source.name,
            "tpot_ms_phi3_aipc": tpot["phi3_aipc"], "tpot_ms_raw": tpot["raw"],
            "ratio": tpot["phi3_aipc"] / tpot["raw"], "ratio_range": (min(ratios), max(ratios))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bench-stand-in")
    p.add_argument("--route", "--backend", dest="route", action="append", choices=list(RAW))
    p.add_argument("--short", type=int, default=8, help="new tokens of the short run")
    p.add_argument("--extra", type=int, default=128, help="tokens the long run adds")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    resolve_model(args.model)  # build the stand-in once, before timing anything
    results = [measure(r, args.model, args.short, args.extra, args.reps)
               for r in args.route or list(RAW)]
    print(f"\nTime per output token, median of {args.reps} rounds, (T({args.short}+{args.extra}) "
          f"- T({args.short})) / {args.extra}; target ratio <= {TARGET}")
    print(f"{'route':20} {'precision':9} {'phi3_aipc ms':>13} {'raw API ms':>11} {'ratio':>6} "
          "(range of the per-round ratios)")
    for r in results:
        verdict = "ok" if r["ratio"] <= TARGET else "OVER TARGET"
        print(f"{r['route']:20} {r['precision']:9} {r['tpot_ms_phi3_aipc']:13.2f} "
              f"{r['tpot_ms_raw']:11.2f} {r['ratio']:6.3f} ({r['ratio_range'][0]:.3f}-"
              f"{r['ratio_range'][1]:.3f})  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
