"""A worker process that holds one Intel NPU Acceleration Library model.

Run by the npu-library route inside the library's own environment (.venv-npu):

    python -m phi3_aipc.backends.npu_worker --model FOLDER --precision int4 --name stand-in

One model per process, because the library aborts the process when a second model with the same
layer shapes runs in it. The protocol is JSON lines: the worker says {"event": "ready", ...}
once the model is compiled; each request line on stdin ({"messages": [...], "request": {...}},
the fields of a GenerationRequest) gets {"event": "text", "text": ...}
lines as the reply streams, then {"event": "done", "result": {...}} or {"event": "error", ...}.
A {"stop": true} line sent while a reply streams ends it early (finish_reason "stopped"): stdin
is read by a thread of its own, so the line is seen while the model generates.
Everything the library itself prints goes to stderr, so stdout stays the protocol's.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import traceback

from ..processes import protocol_sender
from .plan import Plan
from .session import GenerationRequest


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--model", required=True)
    args.add_argument("--precision", required=True, choices=("int4", "int8", "fp16"))
    args.add_argument("--name", required=True)
    opts = args.parse_args()

    send = protocol_sender()  # the library's prints and warnings go to stderr
    try:
        session = load(opts.model, opts.precision, opts.name)
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


def load(model: str, precision: str, name: str):
    """Quantize and compile the model with the library, the way its README shows."""
    import torch
    from intel_npu_acceleration_library import NPUModelForCausalLM, int4
    from intel_npu_acceleration_library.backend import npu_available
    from intel_npu_acceleration_library.compiler import CompilerConfig

    from .transformers import TransformersSession

    dtype = {"int4": int4, "int8": torch.int8, "fp16": torch.float16}[precision]
    start = time.perf_counter()
    net = NPUModelForCausalLM.from_pretrained(model, use_cache=True,
                                              config=CompilerConfig(dtype=dtype))
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


if __name__ == "__main__":
    sys.exit(main())
