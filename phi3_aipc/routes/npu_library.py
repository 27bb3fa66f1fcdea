"""The NPU-library route: Intel's (archived) NPU Acceleration Library, one worker per model.

The library quantizes a Hugging Face model when it loads it (`NPUModelForCausalLM` with
`CompilerConfig(dtype=int4|int8|float16)`) and runs it on the NPU, or on the CPU when there is
none. It lives in its own environment (.venv-npu), and it aborts the whole process when a
second model with the same layer shapes runs in it, so each model runs in a worker process of
its own (`npu_worker.py`) and this module talks to it; a worker that dies becomes an error here,
never a dead notebook kernel.
"""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import weakref
from pathlib import Path

from ..cache import cache_dir
from ..catalog import weight_count
from ..chat import prompt_ids
from ..envs import npu_library_python
from ..errors import BadInput, InsufficientResources, Phi3AipcError
from ..models import ModelSource, folder_fingerprint
from ..processes import Relay, child_env, communicate, end, messages, start, wait
from .base import Route, Verdict
from .plan import Plan
from .session import GenerationRequest, GenerationResult, Session, Streamer

INSTALL_HINT = ("make setup (Linux), or py -3.11 scripts\\bootstrap.py setup (Windows): "
                "it builds .venv-npu")
NPU_LIBRARY_CHECK = """
import json
from intel_npu_acceleration_library.backend import get_driver_version, npu_available
from intel_npu_acceleration_library.backend.utils import __min_npu_driver_version__ as needed
npu = npu_available()
print(json.dumps({"npu": npu, "driver": get_driver_version() if npu else None,
                  "min_driver": needed}))
"""


class NPULibraryRoute(Route):
    name = "npu-library"
    precisions = ("int4", "int8", "fp16")
    devices = ("npu",)
    default_precision = "int4"
    default_device = "npu"
    packages = ("intel-npu-acceleration-library",)
    install_hint = INSTALL_HINT
    doctor_key = "npu_library"

    def is_installed(self) -> bool:
        return npu_library_python() is not None

    def facts(self) -> dict:
        return library_status()

    def facts_lines(self, facts: dict) -> list[str]:
        return ["NPU library: " + (
            "not installed" if not facts["installed"] else
            f"in {facts['python']}; sees an NPU: {facts['npu_available']}"
            + (f", driver {facts['driver_version']} (needs {facts['min_driver_version']}+)"
               if facts["driver_version"] else ""))]

    def verdict(self, facts: dict, versions: dict) -> Verdict:
        if not facts.get("installed"):
            fix = None if sys.platform == "darwin" else INSTALL_HINT
            return Verdict("missing", "intel-npu-acceleration-library is not installed (it is "
                           "archived; OpenVINO GenAI is its successor on the NPU)"
                           + (", and has no macOS build." if fix is None else "."), fix)
        if facts.get("npu_available"):
            driver, needed = facts.get("driver_version"), facts.get("min_driver_version")
            if driver and needed and driver < needed:
                return Verdict("cpu-only", f"NPU driver {driver} is older than the {needed} the "
                               "library needs.", "update the Intel NPU driver")
            return Verdict("ready", f"The NPU library sees an NPU (driver {driver}).")
        return Verdict("cpu-only", "The NPU library sees no NPU and compiles for the CPU, where "
                       "the other routes are faster.")

    def memory_gb(self, weights: int, precision: str) -> float:
        """The library loads the whole checkpoint in fp32 before it quantizes, whatever the
        precision: 4.1 bytes a weight at its peak, memory the PC cannot drop (15.6 GB measured
        for Phi-3-mini's 3.82 billion, scripts/quantize_full_size.py npu-int4-fp32-load; this
        gives 15.7). Notebook 01's section 3 prints the same figure."""
        return weights * 4.1 / 1e9

    def library_caches(self) -> list[tuple[Path, str]]:
        root = cache_dir() / "npu-library"

        def visible(folder: Path) -> list[Path]:  # not the hidden leftovers of removals
            return sorted(f for f in folder.glob("*") if f.is_dir() and not f.name.startswith("."))

        return [(f, "compiled models") for f in visible(root) if f.name != WORK] + \
            [(f, "the library's working files (OpenVINO's compiled blobs, nc_workspace)")
             for f in visible(root / WORK)]

    def prepare(self, plan: Plan, source: ModelSource) -> Path:
        """The checkpoint as it is (the library quantizes as it loads), once it is clear that
        the load fits: the library holds the whole model in fp32 before it quantizes."""
        config = source.path / "config.json"
        if config.is_file():
            import psutil

            need = self.memory_gb(weight_count(json.loads(config.read_text(encoding="utf-8"))),
                                  plan.precision)
            free = psutil.virtual_memory().available / 1e9
            if need > free:
                raise InsufficientResources(
                    f"The NPU library loads {source.name} in fp32 before it quantizes: about "
                    f"{need:.1f} GB of memory, and {free:.1f} GB is free. Close other programs, "
                    "or use OpenVINO GenAI on the NPU (--route openvino --device NPU), which "
                    "needs about a fifth of that.")
        return source.path

    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        return NPULibrarySession(plan, artifact, model)


def library_status() -> dict:
    """Ask the NPU library, in its own environment, whether it sees an NPU and which driver."""
    python = npu_library_python()
    status = {"installed": python is not None, "python": python, "npu_available": None,
              "driver_version": None, "min_driver_version": None, "error": None}
    if python is None:
        return status
    try:  # in a subprocess: the library can abort the process that imports it
        proc = start([python, "-c", NPU_LIBRARY_CHECK], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                     env=child_env())
        stdout, stderr = communicate(proc, timeout=120)
        if proc.returncode == 0:
            found = json.loads(stdout.strip().splitlines()[-1])
            status.update(npu_available=found["npu"], driver_version=found["driver"],
                          min_driver_version=found["min_driver"])
        else:
            status["error"] = (stderr.strip().splitlines() or ["?"])[-1]
    except (subprocess.TimeoutExpired, IndexError, ValueError) as err:
        status["error"] = f"{type(err).__name__}: {err}"
    return status


WORK = "work"  # cache/npu-library/work/<model>: the workers' current folders


def worker_folder(artifact: Path) -> Path:
    """Where a worker keeps its compiled models (compiled-<precision>, safetensors, sealed like
    every artifact). Keyed by the model's content, not its path, so an edited model is compiled
    anew."""
    folder = cache_dir() / "npu-library" / f"{artifact.name}-{folder_fingerprint(artifact)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def worker_cwd(artifact: Path) -> Path:
    """Where a worker runs: the library writes OpenVINO's compiled blobs (reused by the next
    load) and nc_workspace relative to its current folder. Not in `worker_folder`: Windows
    lets no one rename or remove a folder that is a process's current folder, so `cache clear`
    could not remove the compiled models while a worker runs, nor a worker a damaged one."""
    folder = cache_dir() / "npu-library" / WORK / worker_folder(artifact).name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class NPULibrarySession(Session):
    """Talks to a worker process that holds the model (JSON lines, see npu_worker.py)."""

    def __init__(self, plan: Plan, artifact: Path, model: str) -> None:
        from transformers import AutoConfig, AutoTokenizer

        python = npu_library_python()
        env = child_env(PYTHONWARNINGS="ignore::DeprecationWarning,"
                                       "ignore:pkg_resources is deprecated:UserWarning")
        self.proc = start(
            [python, "-m", "phi3_aipc.routes.npu_worker", "--model", str(artifact),
             "--precision", plan.precision, "--name", model,
             "--compiled", str(worker_folder(artifact) / f"compiled-{plan.precision}")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=worker_cwd(artifact), env=env, text=True, encoding="utf-8",
            errors="replace")
        self._finalizer = weakref.finalize(self, stop_worker, self.proc)
        self.relay = Relay(self.proc.stderr, keep=20)
        self.events = messages(self.proc.stdout)  # read in steps an interrupt lands between
        try:
            # The same tokenizer and window as the worker's, to check a prompt before sending.
            self.tokenizer = AutoTokenizer.from_pretrained(artifact)
            self.context_window = AutoConfig.from_pretrained(artifact).max_position_embeddings
            ready = self._next_event()
        except BaseException:  # interrupted or failed: the worker must not go on compiling
            end(self.proc)
            self.close()
            raise
        super().__init__(plan, model, ready["load_s"], ready["device"], ready["note"])

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return prompt_ids(self.tokenizer, messages)

    def _next_event(self) -> dict:
        event = next(self.events, None)
        if event is None:
            raise self._died()
        if event["event"] == "error":
            error = BadInput if event["type"] == "BadInput" else Phi3AipcError
            raise error(event["message"])
        return event

    def _died(self) -> Phi3AipcError:
        code = wait(self.proc)
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        self.relay.join(timeout=2)
        last = self.relay.last_line()
        return Phi3AipcError(f"The NPU library's worker process {how}"
                             + (f" ({last})" if last else "")
                             + ". Your Python session is unaffected; load the model again.")

    def _send(self, message: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def _generate(self, messages: list[dict], prompt: list[int], request: GenerationRequest,
                  streamer: Streamer | None) -> GenerationResult:
        if self.proc.poll() is not None:
            raise self._died()
        self._send({"messages": messages, "request": request.__dict__})
        stopping = False
        try:
            while True:
                event = self._next_event()
                if event["event"] == "text" and streamer and not stopping:
                    if streamer(event["text"]):  # the worker ends the reply at its next token
                        stopping = True
                        self._send({"stop": True})
                elif event["event"] == "done":
                    return GenerationResult.from_dict(event["result"])
        except BadInput:
            raise  # the worker answered and is ready for the next request
        except BaseException:
            # Interrupted mid-reply: the rest of it would be read as the next reply's, so the
            # worker goes at once, and this session with it.
            end(self.proc)
            self.close()
            raise

    def logits(self, ids: list[int]):
        """The worker's model's logits, passed through a file."""
        import tempfile

        import numpy as np

        if self.proc.poll() is not None:
            raise self._died()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "logits.npy"
            self._send({"logits": list(ids), "out": str(out)})
            try:
                self._next_event()
            except BadInput:
                raise  # the worker answered and is ready for the next request
            except BaseException:
                end(self.proc)  # interrupted: its late answer would be read as the next one's
                self.close()
                raise
            return np.load(out)

    def close(self) -> None:
        """End the worker (also done when the session is garbage-collected)."""
        self._finalizer()


def stop_worker(proc: subprocess.Popen) -> None:
    """Ask a worker to end (its stdin closes), and kill it if it has not within 10 s or the
    wait is interrupted."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):  # a worker that died leaves a broken pipe
            proc.stdin.close()
        try:
            wait(proc, timeout=10)
        except subprocess.TimeoutExpired:
            end(proc)
        except BaseException:
            end(proc)
            raise
