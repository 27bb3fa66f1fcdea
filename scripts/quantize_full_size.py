"""Each route's quantize step at full size, as on a 16 GB PC: peak memory, time, where it broke.

    python scripts/quantize_full_size.py --setup                 # the fp16 sources, once (below)
    python scripts/quantize_full_size.py --as-if-gb 16 ov-int4-cw ort-quantizer-int4 ...
    python scripts/quantize_full_size.py --list                  # the approaches

The model is the full-size bench stand-in (Phi-3-mini-4k's exact shapes, random weights, 7.6 GB in
bf16). `--setup` makes what the publishers offer to download, from it, with the libraries' own
converters: OpenVINO's fp16 IR (as `OpenVINO/Phi-3-mini-4k-instruct-fp16-ov`, with optimum-cli)
and Microsoft's fp16 ONNX (as `microsoft/Phi-3-mini-4k-instruct-onnx`'s `cuda/cuda-fp16`, with the
ORT GenAI builder). Those are not the learner's steps, and are measured only for the record.

Each approach runs in a process of its own; its process tree's resident memory is sampled every
0.2 s, as scripts/notebook_budget.py does: `peak` counts mapped weight files (as Task Manager does),
`peak_anon` leaves them out (what the PC cannot drop under pressure). `--as-if-gb N` holds this
machine's memory beyond N GB in a separate process while a step runs, so a step that needs more
than such a PC has is killed (or has the holder killed) and says so. A guard ends the step when
this machine has under GUARD_GB available, whatever the holder, to spare the processes beside it.
Results go to <cache>/quantize-full-size/results.json (each approach's latest run) and are printed.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NPU_PYTHON = ROOT / ".venv-npu" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
GUARD_GB = 1.5
LAYERS = 32


# The learner's steps, each as the lines a notebook types (run here in a child process).
def ov_nncf(src: Path, out: Path, mode: str, group_size: int) -> None:
    """NNCF on the fp16 IR: the IR's weights stay memory-mapped, one layer compressed at a time."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(src / "openvino_model.xml")
    model = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode),
                                  group_size=group_size, ratio=1.0)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("openvino_model.*"))
    ov.save_model(model, out / "openvino_model.xml", compress_to_fp16=False)


def ov_optimum(src: Path, out: Path) -> None:
    """optimum-intel's equivalent: a quantization config applied to an existing OpenVINO model."""
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    config = OVWeightQuantizationConfig(bits=4, sym=True, group_size=128, ratio=1.0)
    model = OVModelForCausalLM.from_pretrained(src, quantization_config=config, compile=False)
    model.save_pretrained(out)


def ort_quantizer(src: Path, out: Path) -> None:
    """onnxruntime's MatMulNBitsQuantizer over the fp16 ONNX, given its path: it loads it all."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(str(src / "model.onnx"), block_size=128, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.onnx*"))
    quantizer.model.save_model_to_file(str(out / "model.onnx"), use_external_data_format=True)


def ort_quantizer_lazy(src: Path, out: Path) -> None:
    """The same quantizer given the graph without its weights, as notebook 02 runs it now: onnx
    reads each weight from the data file when the quantizer asks for it."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src / "model.onnx"), load_external_data=False)
    quantizer = MatMulNBitsQuantizer(model, block_size=128, is_symmetric=True, accuracy_level=4)
    here = os.getcwd()
    os.chdir(src)  # the data file's name is relative to the current folder
    try:
        quantizer.process()
    finally:
        os.chdir(here)
    load_external_data_for_model(quantizer.model.model, str(src))
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.onnx*"))
    quantizer.model.save_model_to_file(str(out / "model.onnx"), use_external_data_format=True)


def npu_library(src: Path, out: Path, **load: object) -> None:
    """The NPU library's load (int4), with transformers' keywords `load`; then one token."""
    import torch
    from intel_npu_acceleration_library import NPUModelForCausalLM, int4
    from intel_npu_acceleration_library.compiler import CompilerConfig

    load = {k: getattr(torch, v) if k == "torch_dtype" else v for k, v in load.items()}
    out.mkdir()
    os.chdir(out)  # the library writes ./cache and ./nc_workspace
    model = NPUModelForCausalLM.from_pretrained(str(src), use_cache=True, export=False,
                                                config=CompilerConfig(dtype=int4), **load).eval()
    print("generated", model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=1).tolist())


def npu_fp32_load(src: Path, out: Path) -> None:
    """What the NPU library does first, alone: transformers' fp32 load of the checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(src), torch_dtype=torch.float32)


def tool(*cmd: str) -> list[str]:
    return [sys.executable, *cmd]


# name: (source, what it runs: a function above with keywords, or a command; the Python)
APPROACHES = {
    "ov-int4-cw": ("fp16-ir", (ov_nncf, {"mode": "INT4_SYM", "group_size": -1})),
    "ov-int4-g128": ("fp16-ir", (ov_nncf, {"mode": "INT4_SYM", "group_size": 128})),
    "ov-int8": ("fp16-ir", (ov_nncf, {"mode": "INT8_ASYM", "group_size": -1})),
    "ov-optimum-int4-g128": ("fp16-ir", (ov_optimum, {})),
    "ort-quantizer-int4": ("fp16-onnx", (ort_quantizer, {})),
    "ort-quantizer-int4-lazy": ("fp16-onnx", (ort_quantizer_lazy, {})),
    "ort-builder-int4": ("checkpoint", ["-m", "onnxruntime_genai.models.builder", "-i", "{src}",
                                        "-o", "{out}", "-p", "int4", "-e", "cpu", "-c",
                                        "{out}.cache", "--extra_options", "block_size=128",
                                        "accuracy_level=4"]),
    "ort-builder-int4-dml": ("checkpoint", ["-m", "onnxruntime_genai.models.builder", "-i",
                                            "{src}", "-o", "{out}", "-p", "int4", "-e", "dml",
                                            "-c", "{out}.cache"]),
    "npu-int4-fp32-load": ("checkpoint", (npu_library, {})),
    "npu-int4-fp16-load": ("checkpoint", (npu_library, {"torch_dtype": "float16"})),
    "npu-int4-fp16-low-mem": ("checkpoint", (npu_library, {"torch_dtype": "float16",
                                                           "low_cpu_mem_usage": True})),
    "npu-fp32-load-only": ("checkpoint", (npu_fp32_load, {})),
}
# The publishers' side (--setup): their fp16 builds, made from the checkpoint.
SETUP = {
    "fp16-ir": ["-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", "{src}",
                "--task", "text-generation-with-past", "--weight-format", "fp16", "{out}"],
    "fp16-onnx": ["-m", "onnxruntime_genai.models.builder", "-i", "{src}", "-o", "{out}", "-p",
                  "fp16", "-e", "cuda", "-c", "{out}.cache"],
}


def work_dir() -> Path:
    from phi3_aipc.cache import cache_dir

    return cache_dir() / "quantize-full-size"


def checkpoint() -> Path:
    from phi3_aipc.standin import ensure_bench_stand_in

    return ensure_bench_stand_in(LAYERS)


def source(name: str) -> Path:
    return checkpoint() if name == "checkpoint" else work_dir() / name


@functools.cache
def budget():
    """scripts/notebook_budget.py, whose memory sampling and holder this script shares."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebook_budget",
                                                  ROOT / "scripts" / "notebook_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(cmd: list[str], log: Path, timeout: float, cwd: Path | None = None) -> dict:
    """Run `cmd`, sampling its tree's memory; end it if this machine runs short."""
    import psutil

    from phi3_aipc.processes import end_tree, own_group

    peak = peak_anon = 0
    broke = None
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, **own_group())
        while proc.poll() is None:
            rss, anon = budget().tree_rss(proc.pid)
            peak, peak_anon = max(peak, rss), max(peak_anon, rss if anon is None else anon)
            if psutil.virtual_memory().available < GUARD_GB * 1e9:
                broke = f"ended by the guard at {rss / 1e9:.1f} GB: this machine ran short"
            elif time.perf_counter() - start > timeout:
                broke = f"ended after the {timeout / 60:.0f}-minute timeout"
            if broke:
                end_tree(proc)
                break
            time.sleep(0.2)
    rc = proc.wait()
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
    if broke is None and rc != 0:
        broke = ("killed (out of memory)" if rc in (-9, 137)
                 else f"exit code {rc}: {tail[0][:200]}")
    return {"peak_gb": round(peak / 1e9, 2), "peak_anon_gb": round(peak_anon / 1e9, 2),
            "minutes": round((time.perf_counter() - start) / 60, 1), "broke": broke}


def hold_memory(as_if_gb: float) -> subprocess.Popen | None:
    """scripts/notebook_budget.py's holder: this machine looks like an `as_if_gb` GB PC."""
    return budget().hold_memory(as_if_gb)


def command(step, src: Path, out: Path, name: str) -> list[str]:
    if isinstance(step, list):
        return tool(*(a.format(src=src, out=out) for a in step))
    python = NPU_PYTHON if name.startswith("npu") else Path(sys.executable)
    return [str(python), str(Path(__file__).resolve()), "--child", name, str(src), str(out)]


def run_child(name: str, src: Path, out: Path) -> None:
    func, keywords = APPROACHES[name][1]
    func(src, out, **keywords)


def disk_gb(folder: Path) -> float:
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    return round(sum(f.stat().st_size for f in files) / 1e9, 2)


def run(name: str, step, src: Path, out: Path, as_if_gb: float | None, timeout: float) -> dict:
    import psutil

    if out.exists():
        shutil.rmtree(out)
    shutil.rmtree(Path(f"{out}.cache"), ignore_errors=True)
    free = psutil.virtual_memory().available / 1e9
    held = hold_memory(as_if_gb) if as_if_gb and free >= 20 else None
    if as_if_gb and held is None:
        print(f"  {free:.1f} GB available, under 20: run without the {as_if_gb:g} GB holder")
    try:
        r = measure(command(step, src, out, name), out.parent / f"{name}.log", timeout, src.parent)
    finally:
        if held is not None:
            if held.poll() is not None and not r.get("broke"):
                r["broke"] = "the memory holder was killed: over the PC's memory"
            held.kill()
            held.wait()
    shutil.rmtree(Path(f"{out}.cache"), ignore_errors=True)
    r.update(as_if_gb=as_if_gb if held is not None else None, disk_gb=disk_gb(out),
             date=date.today().isoformat(), source=src.name)
    return r


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("names", nargs="*", help="approaches to run (see --list)")
    args.add_argument("--setup", action="store_true", help="make the fp16 sources first")
    args.add_argument("--as-if-gb", type=float, help="hold memory beyond N GB while a step runs")
    args.add_argument("--timeout", type=float, default=60, help="per step, in minutes")
    args.add_argument("--keep", action="store_true", help="keep each step's output")
    args.add_argument("--list", action="store_true")
    args.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    opts = args.parse_args(argv)
    if opts.child:
        run_child(opts.child[0], Path(opts.child[1]), Path(opts.child[2]))
        return 0
    if opts.list:
        for name, (src, _) in APPROACHES.items():
            print(f"{name:24} from the {src}")
        return 0
    sys.path.insert(0, str(ROOT))
    work = work_dir()
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    unknown = [n for n in opts.names if n not in APPROACHES]
    if unknown:
        print(f"unknown approaches: {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    missing = sorted({APPROACHES[n][0] for n in opts.names} & set(SETUP) - {
        n for n in SETUP if opts.setup or (work / n).is_dir()})
    if missing:
        print(f"{', '.join(missing)} not made yet: add --setup", file=sys.stderr)
        return 2
    todo = [(n, SETUP[n], checkpoint(), work / n) for n in SETUP if opts.setup]
    todo += [(n, APPROACHES[n][1], source(APPROACHES[n][0]), work / "out" / n)
             for n in opts.names]
    (work / "out").mkdir(exist_ok=True)
    for name, step, src, out in todo:
        if name in SETUP and out.is_dir():
            print(f"{name}: already made ({disk_gb(out)} GB)")
            continue
        print(f"{name} ...", flush=True)
        r = run(name, step, src, out, None if name in SETUP else opts.as_if_gb, opts.timeout * 60)
        results[name] = r
        results_file.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"  peak {r['peak_gb']} GB ({r['peak_anon_gb']} GB without mapped files), "
              f"{r['minutes']} min, {r['disk_gb']} GB on disk"
              + (f", as a {r['as_if_gb']:g} GB PC" if r["as_if_gb"] else "")
              + (f"\n  BROKE: {r['broke']}" if r["broke"] else ""), flush=True)
        if name not in SETUP and not opts.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"results: {results_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
