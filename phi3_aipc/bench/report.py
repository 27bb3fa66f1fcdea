"""The benchmark's report: derived figures, the ranking and why, the table, CSV/JSON and plots.

Decode speed is set by how fast the weights stream from memory: every new token reads every
weight once. `weights_read_mb / time per token` over the machine's measured read bandwidth is the
efficiency: how close a route gets to that physical limit.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..models import BENCH_STAND_IN, bench_layers
from ..standin import PHI3_MINI_LAYERS

CACHE_SIZED_MB = 100  # weights this small may stay in the CPU's caches between tokens


def add_derived(result: dict, bandwidth_gb_s: float | None, model: str, at: int) -> None:
    """Figures derived from the measured ones, computed once here: tokens/s and bandwidth
    efficiency per prompt length; the decode figures at the ranking length; and for the bench
    stand-in an estimate for Phi-3-mini's full 32 layers."""
    if "error" in result:
        return
    for row in result["lengths"].values():
        tpot = row["tpot_ms"]["median"]
        row["tokens_per_s"] = round(1000 / tpot, 2)
        if bandwidth_gb_s:
            achieved = result["weights_read_mb"] / tpot  # MB/ms = GB/s
            row["achieved_gb_s"] = round(achieved, 2)
            row["efficiency"] = round(achieved / bandwidth_gb_s, 3)
    row = result["lengths"][str(at)]
    tpot = row["tpot_ms"]["median"]
    result["decode"] = {"prompt_tokens": row["prompt_tokens"], "tpot_ms": tpot,
                        **{k: row[k] for k in ("tokens_per_s", "achieved_gb_s", "efficiency")
                           if k in row}}
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
        for v in r["lengths"].values():
            out.append({**base, "prompt_tokens": v["prompt_tokens"],
                        **{f"{k}_{s}": v[k][s] for k in ("ttft_ms", "tpot_ms")
                           for s in ("median", "min", "max")},
                        "tokens_per_s": v["tokens_per_s"], "efficiency": v.get("efficiency"),
                        **{k: r[k] for k in ("artifact_mb", "weights_read_mb", "load_cold_s",
                                             "load_warm_s", "peak_rss_mb")}})
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
    """A Markdown table of the decode figures per config, for a terminal or docs/benchmark.md."""
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
            lines.append(f"{r['config']}: emulated, with the CPU doing the work: not the "
                         "device's timings, so not ranked.")
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
