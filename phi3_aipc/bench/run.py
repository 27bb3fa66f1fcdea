"""Running the benchmark: each configuration in measuring processes of its own, with a
progress bar, into one report."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import BadInput
from ..models import resolve_model
from ..processes import Relay, child_env, end, messages, start, wait
from .configs import LENGTHS, BenchConfig, decode_length, load_prompts, longest_prompt, too_big
from .machine import machine
from .report import add_derived, fastest


def run(configs: list[BenchConfig], model: str | None = None, reps: int = 3,
        new_tokens: int = 64, lengths: tuple[int, ...] = LENGTHS, progress: bool = True,
        bandwidth: bool = True, emulate_any_size: bool = False) -> dict:
    """Measure every config, each in its own process; return the report (see `report.write`).
    An emulated NPU is skipped, with the reason on stderr, for a model too big to emulate in
    reasonable time (`too_big`), unless `emulate_any_size`."""

    from tqdm.auto import tqdm

    prompts = load_prompts()
    lengths = tuple(dict.fromkeys(lengths))  # each length once: its prompts are used once
    most = min(len(v) for v in prompts.values()) - 1
    if not isinstance(reps, int) or not 1 <= reps <= most:
        raise BadInput(f"reps must be 1-{most} (one distinct prompt per run, plus one for the "
                       f"warm-up); got {reps}.")
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise BadInput(f"new_tokens must be at least 2 to time decoding; got {new_tokens}.")
    unknown = [n for n in lengths if n not in prompts]
    if unknown:
        raise BadInput(f"No benchmark prompts of {unknown} tokens; data/bench_prompts.json has "
                       f"{', '.join(map(str, prompts))}.")
    if not configs:
        raise BadInput("Nothing to measure: no installed route matches the filters. See "
                       "`phi3-aipc doctor`.")
    source = resolve_model(model, progress)  # built or downloaded once, before the workers
    if not emulate_any_size:
        for config in [c for c in configs if c.emulated]:
            if reason := too_big(config, source.path):
                print(f"skip: {reason}", file=sys.stderr, flush=True)
                configs = [c for c in configs if c != config]
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
        result.setdefault("backend", config.route)  # the report's documented key
        for key in ("precision", "device"):
            result.setdefault(key, getattr(config, key))
        if result.get("device_note") and not config.emulated:  # e.g. the NPU library on a CPU
            result["config"] = f"{config.route} {result['precision']} {result['device']}"
        add_derived(result, report["machine"].get("bandwidth_gb_s"), source.name,
                    report["settings"]["decode_length"])
        report["results"].append(result)
    bar.close()
    report["fastest"] = fastest(report["results"])
    return report


def model_context(folder: Path) -> int | None:
    config = folder / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    return None


def run_worker(spec: dict, on_event) -> dict:
    """Run one config in a new Python process; relay its messages; return its result. Its
    output is read, and its end waited for, in steps an interrupt lands between; interrupted,
    it is killed."""
    proc = start([sys.executable, "-m", "phi3_aipc.bench.worker", json.dumps(spec)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                 errors="replace", env=child_env(PYTHONWARNINGS="ignore"))
    relay = Relay(proc.stderr, keep=20)  # export progress and warnings, shown as they come
    result = None
    try:
        for message in messages(proc.stdout):
            if "event" in message:
                on_event(message["event"])
            else:
                result = message
        wait(proc)
    except BaseException:
        end(proc)
        raise
    relay.join(timeout=5)
    if result is None:
        result = {"error": f"the worker ended with exit code {proc.returncode}: "
                           f"{' '.join(list(relay.tail)[-3:]).strip()}"}
    return result
