"""The NPU-library route: Intel's (archived) NPU Acceleration Library, one worker per model.

The library quantizes a Hugging Face model when it loads it (`NPUModelForCausalLM` with
`CompilerConfig(dtype=int4|int8|float16)`) and runs it on the NPU, or on the CPU when there is
none. It lives in its own environment (.venv-npu), and it aborts the whole process when a
second model with the same layer shapes runs in it, so each model runs in a worker process of
its own (`npu_worker.py`) and this module talks to it; a worker that dies becomes an error here,
never a dead notebook kernel.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from pathlib import Path

from ..cache import cache_dir
from ..envs import npu_library_python
from ..errors import BadInput, Phi3AipcError
from ..models import ModelSource, folder_fingerprint
from .base import Backend, GenerationResult, Metrics, Session, Streamer

INSTALL_HINT = ("make setup (Linux), or py -3.11 scripts\\bootstrap.py setup (Windows): "
                "it builds .venv-npu")


class NPULibraryBackend(Backend):
    name = "npu-library"
    precisions = ("int4", "int8", "fp16")
    devices = ("npu",)
    default_precision = "int4"
    default_device = "npu"
    modules = ()
    install_hint = INSTALL_HINT

    def is_installed(self) -> bool:
        return npu_library_python() is not None

    def prepare(self, source: ModelSource, precision: str, device: str | None = None,
                **options) -> Path:
        return source.path  # the library quantizes as it loads; its cache is per worker folder

    def load(self, artifact: Path, device: str, precision: str, model: str,
             **options) -> Session:
        return NPULibrarySession(artifact, precision, model)


def worker_folder(artifact: Path) -> Path:
    """Where a worker runs: the library writes its compiled-model cache (./cache),
    OpenVINO blobs and nc_workspace relative to it. Keyed by the model's content, because the
    library's own cache key is the model's path and would reuse a stale model."""
    folder = cache_dir() / "npu-library" / f"{artifact.name}-{folder_fingerprint(artifact)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class NPULibrarySession(Session):
    def __init__(self, artifact: Path, precision: str, model: str) -> None:
        python = npu_library_python()
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # its cache is pickled
               "PYTHONIOENCODING": "utf-8",
               "PYTHONWARNINGS": "ignore::DeprecationWarning,"
                                 "ignore:pkg_resources is deprecated:UserWarning"}
        self.proc = subprocess.Popen(
            [python, "-m", "phi3_aipc.backends.npu_worker", "--model", str(artifact),
             "--precision", precision, "--name", model],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=worker_folder(artifact), env=env, text=True, encoding="utf-8",
            errors="replace")
        self._finalizer = weakref.finalize(self, stop_worker, self.proc)
        self.stderr_tail: deque[str] = deque(maxlen=20)
        # The thread must not hold `self`, or the session could never be collected (and its
        # worker never stopped) while the worker runs.
        threading.Thread(target=relay_stderr, args=(self.proc.stderr, self.stderr_tail),
                         daemon=True).start()
        ready = self._next_event()
        super().__init__("npu-library", ready["device"], precision, model, ready["load_s"],
                         ready["note"])

    def _next_event(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise self._died()
        event = json.loads(line)
        if event["event"] == "error":
            error = BadInput if event["type"] == "BadInput" else Phi3AipcError
            raise error(event["message"])
        return event

    def _died(self) -> Phi3AipcError:
        code = self.proc.wait()
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        return Phi3AipcError(f"The NPU library's worker process {how}"
                             + (f" ({last})" if last else "")
                             + ". Your Python session is unaffected; load the model again.")

    def generate(self, messages: list[dict], max_new_tokens: int = 256, greedy: bool = False,
                 ignore_eos: bool = False, streamer: Streamer | None = None,
                 temperature: float = 0.7, top_p: float = 0.9,
                 seed: int | None = None) -> GenerationResult:
        if self.proc.poll() is not None:
            raise self._died()
        request = dict(messages=messages, max_new_tokens=max_new_tokens, greedy=greedy,
                       ignore_eos=ignore_eos, temperature=temperature, top_p=top_p, seed=seed)
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        stopping = False
        try:
            while True:
                event = self._next_event()
                if event["event"] == "text" and streamer and not stopping:
                    if streamer(event["text"]):  # the worker ends the reply at its next token
                        stopping = True
                        self._send_stop()
                elif event["event"] == "done":
                    result = event["result"]
                    result["metrics"] = Metrics(**result["metrics"])
                    return GenerationResult(**result)
        except BadInput:
            raise  # the worker answered and is ready for the next request
        except BaseException:
            # Interrupted mid-reply: the rest of it would be read as the next reply's, so the
            # worker goes, and this session with it.
            self.close()
            raise

    def _send_stop(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"stop": True}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def close(self) -> None:
        """End the worker (also done when the session is garbage-collected)."""
        self._finalizer()


def relay_stderr(stream, tail: deque) -> None:
    """Pass the worker's messages on to our stderr, keeping the last few for error reports."""
    for line in stream:
        sys.stderr.write(line)
        tail.append(line.rstrip())


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
