"""The one small interface every route implements, and the results it returns.

prepare(model, precision) -> artifact folder; load(artifact, device) -> Session;
Session.generate(messages) -> GenerationResult with the generated ids, text and timings.
"""
from __future__ import annotations

import codecs
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadInput, DeviceUnavailable, Phi3AipcError
from ..models import ModelSource

PRECISIONS = ("int4", "int8", "fp16", "fp32")
# Gets each new piece of text; returning True asks generation to end there ("stopped").
Streamer = Callable[[str], "bool | None"]


@dataclass
class Metrics:
    """Timings of one generation. ttft: prompt in -> first token out; tpot: per later token."""

    load_s: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    tokens_per_s: float | None = None
    peak_rss_mb: float | None = None


@dataclass
class GenerationResult:
    backend: str
    device: str
    precision: str
    model: str
    text: str
    token_ids: list[int]  # generated ids, without the stop token
    # "stop" (a stop token), "length" (max_new_tokens reached) or "stopped" (the streamer
    # asked to end, e.g. a chat's Stop button)
    finish_reason: str
    prompt_tokens: int
    metrics: Metrics = field(default_factory=Metrics)
    device_note: str = ""  # e.g. what a missing device fell back to

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def summary(self) -> str:
        m = self.metrics
        fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
        return (f"{self.backend} | {self.device} | {self.precision} | {self.model} | "
                f"TTFT {fmt(m.ttft_ms, '.1f')} ms | {fmt(m.tokens_per_s, '.1f')} tokens/s | "
                f"{len(self.token_ids)} tokens ({self.finish_reason})")


class TokenClock:
    """Timestamps tokens as they come, and turns them into Metrics."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def metrics(self, load_s: float | None) -> Metrics:
        s = self.stamps
        ttft = (s[0] - self.start) * 1000 if s else None
        tpot = (s[-1] - s[0]) * 1000 / (len(s) - 1) if len(s) > 1 else None
        return Metrics(load_s=load_s, ttft_ms=ttft, tpot_ms=tpot,
                       tokens_per_s=1000 / tpot if tpot else None, peak_rss_mb=peak_rss_mb())


class TokenStream:
    """Collects generated ids one by one: times them, streams their text, spots the stop token.

    `decode` turns ids into text (skipping special tokens); `streamer` gets each new piece of
    text, and may return True to end generation early. `push` returns True when generation
    should end: a stop token (unless ignore_eos), or the streamer asked to.
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: set[int], ignore_eos: bool,
                 streamer: Streamer | None = None) -> None:
        self.decode, self.stops, self.ignore_eos = decode, stops, ignore_eos
        self.streamer = streamer
        self.clock = TokenClock()
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False  # a stop token ended it
        self.cancelled = False  # the streamer ended it

    def push(self, token_id: int) -> bool:
        self.clock.tick()
        if token_id in self.stops and not self.ignore_eos:
            self.stopped = True
            return True
        self.ids.append(token_id)
        text = self.decode(self.ids)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            new = text[len(self.text):]
            self.text = text
            if self.streamer and new and self.streamer(new):
                self.cancelled = True
                return True
        return False

    @property
    def finish_reason(self) -> str:
        return "stop" if self.stopped else "stopped" if self.cancelled else "length"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    On Linux this is VmHWM: getrusage's ru_maxrss would carry over the peak of the parent a
    worker process was forked from.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 1024 / 1024


def run_tool(cmd: list[str], what: str, output: Path) -> None:
    """Run a converter (optimum-cli, the ORT GenAI builder) from this environment, passing its
    output on to our stderr (a notebook shows it; stdout stays clean for --json). On failure,
    raise with the exception line it printed: `what` failed: <reason>."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # tracer warnings scare more than inform
    if cmd[0] == "python":
        program = sys.executable
    else:  # a console script of this environment (optimum-cli, or optimum-cli.exe)
        program = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or cmd[0]
    try:
        proc = subprocess.Popen([program, *cmd[1:]],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    except OSError as err:
        raise Phi3AipcError(f"{what} could not start {cmd[0]}: {err}. Is the route installed "
                            "in this environment?") from None
    tail: deque[str] = deque(maxlen=40)
    pending = ""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            text = decoder.decode(chunk)
            sys.stderr.write(text)
            sys.stderr.flush()
            *lines, pending = (pending + text).split("\n")  # whole lines only
            tail.extend(line for line in lines if line.strip())
    except BaseException:  # interrupted: the converter must not go on writing on its own
        proc.kill()
        proc.wait()
        raise
    if pending.strip():
        tail.append(pending)
    if proc.wait() != 0:
        errors = [line for line in tail if re.match(r"[\w.]*(Error|Exception)\b.*:", line)]
        reason = (errors or list(tail) or [f"exit code {proc.returncode}"])[-1].strip()
        shown = " ".join("<output>" if arg == str(output) else arg for arg in cmd)
        raise Phi3AipcError(f"{what} failed: {reason} Command: {shown}")


class Session(ABC):
    """A model loaded on a device, ready to generate."""

    def __init__(self, backend: str, device: str, precision: str, model: str,
                 load_s: float, device_note: str = "") -> None:
        self.backend, self.device, self.precision, self.model = backend, device, precision, model
        self.load_s, self.device_note = load_s, device_note

    @abstractmethod
    def generate(self, messages: list[dict], max_new_tokens: int = 256, greedy: bool = False,
                 ignore_eos: bool = False, streamer: Streamer | None = None,
                 temperature: float = 0.7, top_p: float = 0.9,
                 seed: int | None = None) -> GenerationResult:
        """Reply to `messages`. With ignore_eos, exactly max_new_tokens tokens are generated."""

    def result(self, stream: TokenStream, prompt_tokens: int,
               metrics: Metrics | None = None) -> GenerationResult:
        """The result of a finished `stream`; `metrics` if the backend measured its own."""
        return GenerationResult(self.backend, self.device, self.precision, self.model,
                                stream.decode(stream.ids), stream.ids, stream.finish_reason,
                                prompt_tokens, metrics or stream.clock.metrics(self.load_s),
                                self.device_note)


class Backend(ABC):
    """A route to run Phi-3: which precisions and devices it offers, and how to prepare and load."""

    name: str
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    default_precision: str
    default_device: str
    modules: tuple[str, ...]  # Python modules the route needs
    install_hint: str  # the command that installs them
    prepare_options: tuple[str, ...] = ()  # keyword options prepare() accepts
    load_options: tuple[str, ...] = ()  # keyword options load() accepts

    def is_installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def check(self, precision: str | None, device: str | None) -> tuple[str, str]:
        """Validate precision and device (None: the route's defaults); return them normalized."""
        precision = (precision or self.default_precision).lower()
        if precision not in self.precisions:
            raise BadInput(f"The {self.name} route offers precisions {', '.join(self.precisions)}; "
                           f"got {precision!r}.")
        device = device or self.default_device
        by_lower = {d.lower(): d for d in self.devices}
        if device.lower() not in by_lower:
            raise BadInput(f"The {self.name} route runs on {', '.join(self.devices)}; "
                           f"got device {device!r}.")
        if not self.is_installed():
            raise DeviceUnavailable(f"The {self.name} route is not installed in this Python "
                                    f"environment. Install it with: {self.install_hint}")
        return precision, by_lower[device.lower()]

    def check_options(self, prepare: dict, load: dict) -> None:
        """Refuse options this route does not have, naming the routes' own."""
        for given, accepted in ((prepare, self.prepare_options), (load, self.load_options)):
            for key in given:
                if key not in accepted:
                    flag = "--" + key.replace("_", "-")
                    raise BadInput(f"{flag} is not an option of the {self.name} route"
                                   + (f" (its options: {', '.join(accepted)})." if accepted
                                      else "."))

    def own_source(self, **prepare_options) -> ModelSource | None:
        """A ready-made model the route fetches itself (e.g. a prebuilt download), or None."""
        return None

    def devices_here(self) -> list[str]:
        """The devices this route can use on this PC, the default first. Routes that can ask
        their runtime override it; the others list what they offer."""
        return [self.default_device, *(d for d in self.devices if d != self.default_device)]

    def check_load(self, device: str, **load_options) -> None:
        """Refuse, before any export, a device this PC lacks. Routes that can tell override it."""

    @abstractmethod
    def prepare(self, source: ModelSource, precision: str, device: str | None = None,
                **options) -> Path:
        """Return a folder holding the model in this route's format at `precision`, made for
        `device` where the route builds per device (None: the route's default)."""

    @abstractmethod
    def load(self, artifact: Path, device: str, precision: str, model: str,
             **options) -> Session:
        """Load a prepared artifact on `device`."""
