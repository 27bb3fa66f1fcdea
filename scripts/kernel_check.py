"""How fast does each library's quantized kernel stream Phi-3's largest weight matrices?

One matrix-vector product (a decode step's shape: one token, batch 1) at Phi-3-mini's largest
layer shapes, through each library alone, timed by the library's own profiler:

- OpenVINO: a model of one MatMul whose weights are stored as NNCF stores them (int4/int8
  constants, a Convert, a Subtract of the zero point when asymmetric, a Multiply by the scales),
  which the CPU plugin fuses into one FullyConnected node with weight decompression; compiled
  with PERF_COUNT, timed by `get_profiling_info()`, whose `exec_type` names the kernel it chose.
- ONNX Runtime: one `com.microsoft.MatMulNBits` node (what the ORT GenAI builder emits), run
  with `enable_profiling`; its trace times each node. The trace names the operator, not MLAS's
  kernel inside it, so the kernel is named from the accuracy level and the CPU's instruction
  sets, as MLAS chooses it (onnxruntime/core/mlas/lib/qnbitgemm.cpp: accuracy level 4 asks for
  int8 activations, CompInt8; 0 and 1 take fp32 activations, CompFp32).

Each model holds enough copies of the matrix (each with its own random weights) that together
they far exceed the CPU's last-level cache, so every product reads its weights from memory, as
in a real decode step. Achieved bandwidth = the bytes the kernel reads (codes, scales, zero
points) / the profiler's time per product, held against the benchmark's own read-bandwidth
probe (`phi3_aipc.bench.machine.measure_bandwidth`), measured before and after each layout
on the same number of threads as the kernels (--threads; default torch's, the probe's own).

    python scripts/kernel_check.py                         # every library, shape and layout
    python scripts/kernel_check.py --library onnxruntime --shape 3072x8192 --reps 5
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from phi3_aipc.bench.machine import instruction_sets, measure_bandwidth

# (input features K, output features N): the MLP's up projection, its down projection, and
# the output layer (Phi-3-mini: hidden 3072, MLP 8192, vocabulary 32064).
SHAPES = {"3072x8192": (3072, 8192), "8192x3072": (8192, 3072), "3072x32064": (3072, 32064)}


class Inconsistent(Exception):
    """A measurement that does not hold together: this script's fault (or its reading of the
    library's output), never a layout the library refuses."""


@dataclass(frozen=True)
class Layout:
    """A weight layout a library offers. group: -1 one scale per output channel, else the
    number of weights sharing a scale (ORT: block size). accuracy: ORT's accuracy_level."""

    library: str
    name: str
    bits: int = 4
    group: int = 128
    sym: bool = True
    accuracy: int | None = None
    properties: dict = field(default_factory=dict)

    def weight_bytes(self, k: int, n: int) -> int:
        """What one product reads: the codes, the scales (fp16 in OpenVINO, fp32 in ORT), the
        zero points (packed like the codes; ORT packs one block row per byte boundary)."""
        groups = 1 if self.group == -1 else math.ceil(k / self.group)
        codes = n * k * self.bits // 8
        scales = n * groups * (2 if self.library == "openvino" else 4)
        if self.sym:
            return codes + scales
        if self.library == "openvino":
            return codes + scales + math.ceil(n * groups * self.bits / 8)
        return codes + scales + n * math.ceil(groups * self.bits / 8)


# What the exports use: our OpenVINO default is symmetric channel-wise int4 (i4 codes, fp16
# scales; the embedding and output layers int8 asymmetric per channel); our ORT GenAI CPU default
# symmetric int4 in blocks of 128 with int8 activations (no zero points: builder 0.18's default).
OPENVINO_LAYOUTS = [
    Layout("openvino", "int4 sym channel-wise (our default)", group=-1),
    Layout("openvino", "int4 sym group 128", group=128),
    Layout("openvino", "int4 asym group 128", group=128, sym=False),
    Layout("openvino", "int8 asym channel-wise (our output layer)", bits=8, group=-1, sym=False),
    Layout("openvino", "int8 sym channel-wise (--backup-precision int8_sym)", bits=8, group=-1),
    Layout("openvino", "int4 sym channel-wise, f32 inference", group=-1,
           properties={"INFERENCE_PRECISION_HINT": "f32"}),
    Layout("openvino", "int4 asym group 128, f32 inference", group=128, sym=False,
           properties={"INFERENCE_PRECISION_HINT": "f32"}),
]
ONNXRUNTIME_LAYOUTS = [
    Layout("onnxruntime", "int4 block 128 sym acc 4 (our default)", group=128, accuracy=4),
    Layout("onnxruntime", "int4 block 32 sym acc 4 (the prebuilt CPU build's block)", group=32,
           accuracy=4),
    Layout("onnxruntime", "int4 block 128 asym acc 4", group=128, sym=False, accuracy=4),
    Layout("onnxruntime", "int4 block 128 sym acc 1 (fp32 activations)", group=128,
           accuracy=1),
    Layout("onnxruntime", "int8 block 128 sym acc 4", bits=8, group=128, accuracy=4),
]
LAYOUTS = {"openvino": OPENVINO_LAYOUTS, "onnxruntime": ONNXRUNTIME_LAYOUTS}


def copies_for(layout: Layout, k: int, n: int, total_mb: int) -> int:
    """How many copies of the matrix make `total_mb` (at least 2): far beyond the caches."""
    return max(2, math.ceil(total_mb * 1e6 / layout.weight_bytes(k, n)))


def random_bytes(rng, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=size, dtype=np.uint8)


def fill(tensor, rng) -> None:
    """Random codes into an OpenVINO tensor (4-bit types are seen as packed bytes)."""
    data = tensor.data
    data.reshape(-1)[:] = random_bytes(rng, data.size).view(data.dtype)


def openvino_products(layout: Layout, k: int, n: int, copies: int, reps: int,
                      threads: int) -> dict:
    """Per-product times (ms) of the CPU plugin's FullyConnected, the kernel it chose, and
    the threads it was compiled for."""
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([-1, -1, k], ov.Type.f32, name="x")
    kind = {(4, True): ov.Type.i4, (4, False): ov.Type.u4, (8, True): ov.Type.i8,
            (8, False): ov.Type.u8}[(layout.bits, layout.sym)]
    groups = 1 if layout.group == -1 else k // layout.group
    shape = [n, k] if layout.group == -1 else [n, groups, layout.group]
    scale_shape = [n, 1] if layout.group == -1 else [n, groups, 1]
    keep, outputs = [], []
    for i in range(copies):
        codes = ov.Tensor(kind, ov.Shape(shape))
        fill(codes, rng)
        weight = ops.convert(ops.constant(codes, shared_memory=True), ov.Type.f16)
        if not layout.sym:
            zero = ov.Tensor(kind, ov.Shape(scale_shape))
            fill(zero, rng)
            weight = ops.subtract(weight, ops.convert(ops.constant(zero, shared_memory=True),
                                                      ov.Type.f16))
            keep.append(zero)
        scales = (rng.random(scale_shape, dtype=np.float32) * 0.01).astype(np.float16)
        weight = ops.multiply(weight, ops.constant(scales))
        if layout.group != -1:
            weight = ops.reshape(weight, ops.constant(np.array([n, k], dtype=np.int64)), False)
        weight = ops.convert(weight, ov.Type.f32)
        product = ops.matmul(x, weight, False, True)
        product.set_friendly_name(f"product_{i}")
        outputs.append(product)
        keep.append(codes)
    model = ov.Model([ops.result(o) for o in outputs], [x], "kernel_check")
    config = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
              **layout.properties}
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    vector = rng.standard_normal((1, 1, k), dtype=np.float32)

    def totals() -> dict[str, tuple[str, float]]:
        # The CPU plugin reports each node's average over every run so far (µs).
        nodes = [p for p in request.get_profiling_info()
                 if p.node_type.startswith("FullyConnected") and p.status.name == "EXECUTED"]
        if len(nodes) != copies:
            raise Inconsistent(f"expected {copies} FullyConnected nodes, the profiler lists "
                               f"{len(nodes)}: the plugin did not fuse the decompression")
        return {p.node_name: (p.exec_type, p.real_time.total_seconds() * 1000) for p in nodes}

    for _ in range(2):  # warm-ups: the first run of a dynamic shape prepares its kernels
        request.infer({0: vector})
    before = totals()
    start = time.perf_counter()
    for _ in range(reps):
        request.infer({0: vector})
    wall = (time.perf_counter() - start) * 1000 / reps / copies
    after = totals()
    times = [(avg * (reps + 2) - before[name][1] * 2) / reps
             for name, (_, avg) in after.items()]
    return {"times_ms": times, "wall_ms": wall,
            "kernel": ", ".join(sorted({kernel for kernel, _ in after.values()})),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}


def onnxruntime_model(layout: Layout, k: int, n: int, copies: int):
    """An ONNX model of `copies` MatMulNBits nodes (own random weights each) on one input."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    blocks = math.ceil(k / layout.group)
    blob = layout.group * layout.bits // 8
    nodes, inits, outs = [], [], []
    for i in range(copies):
        names = [f"B{i}", f"scales{i}"]
        inits.append(numpy_helper.from_array(
            random_bytes(rng, n * blocks * blob).reshape(n, blocks, blob), names[0]))
        inits.append(numpy_helper.from_array(
            (rng.random(n * blocks, dtype=np.float32) * 0.01), names[1]))
        if not layout.sym:
            names.append(f"zero_points{i}")
            inits.append(numpy_helper.from_array(
                random_bytes(rng, n * math.ceil(blocks * layout.bits / 8)), names[2]))
        nodes.append(helper.make_node(
            "MatMulNBits", ["A"] + names, [f"Y{i}"], name=f"product_{i}",
            domain="com.microsoft", K=k, N=n, bits=layout.bits, block_size=layout.group,
            accuracy_level=layout.accuracy))
        outs.append(helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, [1, n]))
    graph = helper.make_graph(nodes, "kernel_check",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("com.microsoft", 1)])


def mlas_kernel(layout: Layout) -> str:
    """The MLAS path for this layout on this CPU, as MLAS chooses it (see the docstring):
    inferred from the accuracy level and the CPU's flags, since ORT names only the operator."""
    isa = set(instruction_sets())
    family = ("avx512vnni" if "avx512_vnni" in isa else "avx512" if "avx512f" in isa
              else "avx2vnni" if "avx_vnni" in isa else "avx2")
    compute = "CompInt8" if layout.accuracy == 4 or layout.bits == 8 else "CompFp32"
    return (f"inferred (accuracy level, CPU flags): MLAS SQ{layout.bits}BitGemm {compute}, "
            f"{family} dispatch, BlkLen {layout.group}")


def onnxruntime_products(layout: Layout, k: int, n: int, copies: int, reps: int,
                         threads: int) -> dict:
    """Per-product times (ms) from ONNX Runtime's profiler trace."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "kernel_check")
        session = ort.InferenceSession(
            onnxruntime_model(layout, k, n, copies).SerializeToString(), options,
            providers=["CPUExecutionProvider"])
        vector = np.random.default_rng(1).standard_normal((1, k), dtype=np.float32)
        for _ in range(2):
            session.run(None, {"A": vector})
        start = time.perf_counter()
        for _ in range(reps):
            session.run(None, {"A": vector})
        wall = (time.perf_counter() - start) * 1000 / reps / copies
        trace = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    times = [e["dur"] / 1000 for e in trace if e.get("cat") == "Node"
             and e.get("args", {}).get("op_name") == "MatMulNBits"
             and e["name"].endswith("_kernel_time")]
    if len(times) != copies * (reps + 2):
        raise Inconsistent(f"the trace holds {len(times)} MatMulNBits runs, expected "
                           f"{copies * (reps + 2)}")
    return {"times_ms": times[2 * copies:], "wall_ms": wall, "kernel": mlas_kernel(layout),
            "threads": options.intra_op_num_threads}


PRODUCTS = {"openvino": openvino_products, "onnxruntime": onnxruntime_products}


def refusals(library: str) -> tuple[type[Exception], ...]:
    """What the library raises when it will not build or run a layout: OpenVINO's C++ errors
    come as RuntimeError (its Python side's as OVError); ONNX Runtime's as its pybind types."""
    if library == "openvino":
        from openvino.exceptions import OVError

        return RuntimeError, OVError
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    return (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
            ort_errors.NotImplemented, ort_errors.RuntimeException)


def check(layout: Layout, shape: str, reps: int, total_mb: int, threads: int) -> dict:
    """One layout at one shape, with the bandwidth probe just before and just after (on as
    many threads as the kernel: main sets torch's)."""
    k, n = SHAPES[shape]
    copies = copies_for(layout, k, n, total_mb)
    probe = measure_bandwidth()
    before = probe["bandwidth_gb_s"]
    try:
        measured = PRODUCTS[layout.library](layout, k, n, copies, reps, threads)
    except refusals(layout.library) as err:  # a layout the library refuses: say so, go on
        return {"error": " ".join(f"{type(err).__name__}: {err}".split())[:300]}
    after = measure_bandwidth()["bandwidth_gb_s"]
    return {"copies": copies, "kernel": measured["kernel"], "times_ms": measured["times_ms"],
            "wall_ms": measured["wall_ms"], "threads": measured["threads"],
            "probe_gb_s": [before, after], "probe_method": probe["bandwidth_method"]}


def summarize(layout: Layout, shape: str, rounds: list[dict]) -> dict:
    """A layout's rounds in one row: the median over every product timed, and the spread of
    the rounds' medians (the machine's drift between rounds shows there)."""
    row = {**asdict(layout), "shape": shape}
    errors = [r["error"] for r in rounds if "error" in r]
    if errors:
        return {**row, "error": errors[0]}
    k, n = SHAPES[shape]
    nbytes = layout.weight_bytes(k, n)
    times = [t for r in rounds for t in r["times_ms"]]
    per_round = [statistics.median(r["times_ms"]) for r in rounds]
    probes = [p for r in rounds for p in r["probe_gb_s"]]
    achieved = nbytes / statistics.median(times) / 1e6  # bytes/ms -> GB/s
    return {**row, "copies": rounds[0]["copies"], "weight_mb": nbytes / 1e6,
            "kernel": rounds[0]["kernel"], "threads": rounds[0]["threads"],
            "probe_method": rounds[0]["probe_method"], "ms": spread(times),
            "round_ms": per_round, "gb_s": achieved,
            "wall_ms": statistics.median(r["wall_ms"] for r in rounds),
            "round_gb_s": [nbytes / t / 1e6 for t in per_round],
            "probe_gb_s": spread(probes), "share_of_probe": achieved / statistics.median(probes)}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def table(rows: list[dict]) -> str:
    lines = ["| library | layout | shape (in x out) | MB read | kernel (OpenVINO: its profiler's "
             "exec_type; ORT: inferred) | ms per product, median "
             "(rounds' medians min-max) | wall ms per product | GB/s (rounds min-max) | probe "
             "GB/s median (min-max) | share of probe |", "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['library']} | {r['name']} | {r['shape']} | | refused: "
                         f"{r['error']} | | | | | |")
            continue
        rm, rg, pr = r["round_ms"], r["round_gb_s"], r["probe_gb_s"]
        lines.append(
            f"| {r['library']} | {r['name']} | {r['shape']} | {r['weight_mb']:.1f} | "
            f"{r['kernel']} | {r['ms']['median']:.3f} ({min(rm):.3f}-{max(rm):.3f}) | "
            f"{r['wall_ms']:.3f} | "
            f"{r['gb_s']:.1f} ({min(rg):.1f}-{max(rg):.1f}) | "
            f"{pr['median']:.1f} ({pr['min']:.1f}-{pr['max']:.1f}) | "
            f"{r['share_of_probe']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--library", action="append", choices=list(LAYOUTS))
    p.add_argument("--shape", action="append", choices=list(SHAPES))
    p.add_argument("--layout", action="append", metavar="TEXT",
                   help="only layouts whose name contains TEXT (repeatable)")
    p.add_argument("--reps", type=int, default=5, help="timed runs over all copies, per round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds through every layout in turn (A B C A B C ...)")
    p.add_argument("--total-mb", type=int, default=128,
                   help="weights per model: copies of the matrix up to this size")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="threads for the kernels and the bandwidth probe alike (default "
                        f"{torch.get_num_threads()}: torch's, what the probe uses on its own)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    if min(args.reps, args.rounds, args.total_mb, args.threads) < 1:
        p.error("--reps, --rounds, --total-mb and --threads must be positive")
    torch.set_num_threads(args.threads)  # the probe reads with torch's threads
    layouts = [layout for library in args.library or list(LAYOUTS)
               for layout in LAYOUTS[library]
               if not args.layout or any(t in layout.name for t in args.layout)]
    if not layouts:
        p.error("no layout matches --layout")
    measured: dict = {}
    for round_ in range(args.rounds):  # interleaved: every layout once per round
        for shape in args.shape or list(SHAPES):
            for i, layout in enumerate(layouts):
                result = check(layout, shape, args.reps, args.total_mb, args.threads)
                measured.setdefault((i, shape), []).append(result)
                print(f"round {round_ + 1}: {layout.library} {layout.name} {shape}: "
                      + (result.get("error") or
                         f"{statistics.median(result['times_ms']):.3f} ms"),
                      file=sys.stderr, flush=True)
    rows = [summarize(layouts[i], shape, rounds) for (i, shape), rounds in measured.items()]
    print(f"\nOne matrix-vector product (batch 1, one token), {args.threads} threads for "
          "the kernels and the probe; "
          f"{args.rounds} interleaved rounds of {args.reps} runs (after 2 warm-ups) over "
          f"copies totalling ~{args.total_mb} MB; "
          "times from each library's profiler; probe: phi3_aipc's read-bandwidth measure")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
