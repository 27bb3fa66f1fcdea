"""A worker process that holds one Intel NPU Acceleration Library model.

Run by the npu-library route inside the library's own environment (.venv-npu):

    python -m phi3_aipc.routes.npu_worker --model FOLDER --precision int4 --name stand-in

One model per process, because the library aborts the process when a second model with the same
layer shapes runs in it. The protocol is JSON lines: the worker says {"event": "ready", ...}
once the model is compiled; each request line on stdin ({"messages": [...], "request": {...}},
the fields of a GenerationRequest) gets {"event": "text", "text": ...}
lines as the reply streams, then {"event": "done", "result": {...}} or {"event": "error", ...}.
A {"logits": [ids], "out": FILE} line gets the next-token logits of every position written to
FILE (.npy; too big for a JSON line), then {"event": "done", "result": {"out": FILE}}.
A {"stop": true} line sent while a reply streams ends it early (finish_reason "stopped"): stdin
is read by a thread of its own, so the line is seen while the model generates.
Everything the library itself prints goes to stderr, so stdout stays the protocol's.
"""
from __future__ import annotations

import argparse
import gc
import json
import queue
import sys
import threading
import time
import traceback
from pathlib import Path

from ..cache import build_once, discard
from ..processes import protocol_sender
from .plan import Plan
from .session import GenerationRequest
from .transformers import TransformersSession  # torch and transformers load inside it, later


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--model", required=True)
    args.add_argument("--precision", required=True, choices=("int4", "int8", "fp16"))
    args.add_argument("--name", required=True)
    args.add_argument("--compiled", required=True, help="the folder for the compiled model")
    opts = args.parse_args()

    send = protocol_sender()  # the library's prints and warnings go to stderr
    try:
        session = load(opts.model, opts.precision, opts.name, opts.compiled)
    except Exception as err:  # report, don't die silently
        send(event="error", type=type(err).__name__, message=str(err),
             trace=traceback.format_exc())
        return 1
    send(event="ready", device=session.device, load_s=session.load_s,
         note=session.device_note)
    requests: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=read_requests, args=(requests, stop), daemon=True).start()
    while (request := requests.get()) is not None:
        stop.clear()  # a stop that came after the previous reply ended is not for this one
        try:
            if "logits" in request:  # {"logits": ids, "out": a .npy file to write them to}
                import numpy as np

                np.save(request["out"], session.logits(request["logits"]))
                send(event="done", result={"out": request["out"]})
                continue
            result = session.generate(
                request["messages"], GenerationRequest.from_dict(request["request"]),
                streamer=lambda text: send(event="text", text=text) or stop.is_set())
            send(event="done", result=result.to_dict())
        except Exception as err:
            send(event="error", type=type(err).__name__, message=str(err),
                 trace=traceback.format_exc())
    return 0


def read_requests(requests: queue.Queue, stop: threading.Event) -> None:
    """Queue each request line; a stop line sets `stop` at once. None in the queue: stdin closed."""
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("stop"):
            stop.set()
        else:
            requests.put(message)
    requests.put(None)


def load(model: str, precision: str, name: str, compiled: str):
    """Quantize and compile the model with the library, the way its README shows, or load the
    compiled model this worker saved before in `compiled` (see `save_compiled`)."""
    import intel_npu_acceleration_library as npu_lib
    import torch
    from intel_npu_acceleration_library import int4
    from intel_npu_acceleration_library.backend import npu_available
    from intel_npu_acceleration_library.compiler import CompilerConfig
    from transformers import AutoModelForCausalLM

    dtype = {"int4": int4, "int8": torch.int8, "fp16": torch.float16}[precision]
    start = time.perf_counter()
    net = None

    def compile_and_save(folder: Path) -> None:
        nonlocal net
        print(f"Compiling {name} ({precision}) with the NPU library; it is kept in {compiled} "
              "for the next load.", file=sys.stderr)
        # What NPUModelForCausalLM.from_pretrained does, minus its cache: that is a pickle
        # (torch.save of the whole model), which runs code when loaded, and it is loaded
        # whenever one is found, even with export=False. This worker keeps its own, as data.
        net = npu_lib.compile(AutoModelForCausalLM.from_pretrained(model, use_cache=True),
                              CompilerConfig(dtype=dtype))
        save_compiled(net, folder)

    loaded = saved_or_compiled(Path(compiled), compile_and_save,
                               lambda folder: load_compiled(model, folder))
    net = net if net is not None else loaded
    load_s = time.perf_counter() - start
    if npu_available():
        device, note = "NPU", ""
    else:
        device = "CPU (no NPU)"
        note = ("No NPU here: the NPU library compiled the model for the CPU, where the "
                "OpenVINO and ONNX Runtime GenAI routes are much faster.")
    plan = Plan("npu-library", precision, "npu")
    return TransformersSession(plan, model, name, net=net, load_s=load_s, device=device,
                               note=note)


def saved_or_compiled(compiled: Path, compile_and_save, load_saved):
    """The model compiled into the folder `compiled`: `compile_and_save(folder)` makes it when
    it is missing (then None is returned: the caller has the model it compiled), else
    `load_saved(folder)` loads it. A saved model that cannot be loaded is discarded and
    compiled again, whatever is wrong with it.

    The discarding happens after the except block, with only the message kept: the traceback's
    frames would keep the failed load's tensors alive, and with them its memory-mapped
    safetensors file, which Windows does not let anyone rename or remove (WinError 5/32).
    """
    made = []
    folder = build_once(compiled, lambda tmp: made.append(compile_and_save(tmp)))
    if made:
        return None
    problem = None
    try:
        return load_saved(folder)
    except Exception as err:  # whatever is wrong with it, compiling mends it
        problem = f"{type(err).__name__}: {err}"
    print(f"The compiled model in {folder} cannot be used ({problem}): compiling again.",
          file=sys.stderr)
    gc.collect()  # what the failed load made, cycles included, goes before its folder does
    discard(folder)
    build_once(folder, compile_and_save)
    return None


# A compiled model on disk: every tensor in compiled.safetensors, and in compiled.json the
# library's layers by name and where each tensor belongs. Loading it executes nothing.
LAYERS = ("Linear", "QuantizedLinear")  # the library's layers that compile() puts in
KINDS = ("parameter", "buffer", "attribute")


def save_compiled(net, folder: Path) -> None:
    """Write the compiled model `net` to `folder` without pickle."""
    import intel_npu_acceleration_library as npu_lib
    import torch
    from safetensors.torch import save_file

    layers, kinds, tensors, aliases, seen = {}, {}, {}, {}, {}
    modules = {prefix: type(module).__name__ for prefix, module in net.named_modules()}
    for prefix, module in net.named_modules():
        kind_of = {**{k: "parameter" for k in module._parameters},
                   **{k: "buffer" for k in module._buffers}}
        if type(module).__name__ in LAYERS and type(module).__module__.startswith(
                "intel_npu_acceleration_library"):
            layers[prefix] = type(module).__name__
        for attr, value in {**module._parameters, **module._buffers, **vars(module)}.items():
            if not isinstance(value, torch.Tensor):
                continue
            key = f"{prefix}.{attr}" if prefix else attr
            if key in kinds:
                continue
            kinds[key] = kind_of.get(attr, "attribute")
            data = value.detach()
            same = (data.data_ptr(), data.dtype, tuple(data.shape), data.stride())
            if data.numel() and same in seen:  # one tensor under two names (tied weights)
                aliases[key] = seen[same]
            else:
                seen[same] = key
                tensors[key] = data.contiguous()
    save_file(tensors, str(folder / "compiled.safetensors"))
    (folder / "compiled.json").write_text(json.dumps(
        {"library": npu_lib.__version__, "modules": modules, "layers": layers, "kinds": kinds,
         "aliases": aliases},
        indent=1), encoding="utf-8")


def load_compiled(model: str, folder: Path):
    """The model `save_compiled` wrote: the model's structure from its config.json, built
    without weights, with the library's layers put back and every tensor set from the file."""
    import intel_npu_acceleration_library as npu_lib
    import torch
    from accelerate import init_empty_weights
    from intel_npu_acceleration_library import nn as npu_nn
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    made = json.loads((folder / "compiled.json").read_text(encoding="utf-8"))
    if made.get("library") != npu_lib.__version__:
        raise ValueError(f"compiled by NPU library {made.get('library')}, "
                         f"this is {npu_lib.__version__}")
    tensors = load_file(str(folder / "compiled.safetensors"))
    tensors.update({key: tensors[source] for key, source in made["aliases"].items()})
    with init_empty_weights(include_buffers=True):
        net = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model, use_cache=True))
    for prefix, layer in made["layers"].items():
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}")
        bias = tensors.get(f"{prefix}.bias")
        if layer == "Linear":
            new = npu_nn.Linear(tensors[f"{prefix}.weight"], bias)
        else:
            new = npu_nn.QuantizedLinear(tensors[f"{prefix}.weight"], tensors[f"{prefix}.scale"],
                                         bias)
            new.scale = tensors[f"{prefix}.scale"]  # as saved (the constructor rescales it)
        parent, _, child = prefix.rpartition(".")
        net.get_submodule(parent).add_module(child, new)
    for key, kind in made["kinds"].items():
        prefix, _, attr = key.rpartition(".")
        module = net.get_submodule(prefix)
        value = tensors[key]
        if kind == "parameter":
            module._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
        elif kind == "buffer":
            module._buffers[attr] = value
        elif kind == "attribute":
            object.__setattr__(module, attr, value)
        else:
            raise ValueError(f"unknown kind {kind!r}")
    if {p: type(m).__name__ for p, m in net.named_modules()} != made["modules"]:
        raise ValueError("its layers are not the ones the library compiled")
    left = [f"{prefix}.{attr}" for prefix, module in net.named_modules()
            for attr, value in {**module._parameters, **module._buffers, **vars(module)}.items()
            if isinstance(value, torch.Tensor) and value.is_meta]
    if left:
        raise ValueError(f"{len(left)} tensors are missing, {left[0]} first")
    return net.eval()


if __name__ == "__main__":
    sys.exit(main())
