"""The one small interface every route implements, and the values that flow through it.

    plan = route.plan(precision, device, prepare_options, load_options)   # checked once
    artifact = route.prepare(plan, source)                                # convert/quantize
    with route.load(plan, artifact, source.name) as session:              # on the device
        result = session.generate(messages, GenerationRequest(greedy=True))

A route also says what it needs and offers (its CLI options, its doctor verdict, its benchmark
configurations, the weights it reads per token), so that nothing outside its own file needs to
know its name.
"""
from __future__ import annotations

import importlib.util
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType

from ..chat import check_fits, check_sampling
from ..errors import BadInput, DeviceUnavailable
from ..models import ModelSource
from ..processes import peak_rss_mb

PRECISIONS = ("int4", "int8", "fp16", "fp32")
# Gets each new piece of text; returning True asks generation to end there ("stopped").
Streamer = Callable[[str], "bool | None"]


@dataclass(frozen=True)
class Option:
    """A setting of a route, as a keyword of prepare() or load() and as a CLI flag.

    `type` is int, float, str or bool (a flag; `off` names the flag that sets it False, as
    --asym does for sym).
    """

    name: str
    stage: str  # "prepare" or "load"
    help: str
    type: type = str
    choices: tuple = ()
    off: str | None = None
    off_help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SKIP_PREFLIGHT = Option("skip_preflight", "prepare", "export even when the memory/disk estimate "
                        "says it will not fit", bool)


def frozen(options: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(options or {}))


@dataclass(frozen=True)
class Plan:
    """A checked request for one route: what to prepare and how to load it, and why.

    Made only by `Route.plan`, which refuses what cannot work here before anything is built;
    `notes` say what was chosen for the user (e.g. the CPU because there is no DirectML).
    """

    route: str
    precision: str
    device: str
    prepare_options: Mapping = field(default_factory=frozen)
    load_options: Mapping = field(default_factory=frozen)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "prepare_options", frozen(self.prepare_options))
        object.__setattr__(self, "load_options", frozen(self.load_options))

    def but(self, **changes) -> Plan:
        """A copy with some fields changed (a route's own normalization)."""
        return replace(self, **changes)

    @property
    def note(self) -> str:
        return " ".join(self.notes)


@dataclass(frozen=True)
class GenerationRequest:
    """How to generate: every route takes these same settings."""

    max_new_tokens: int = 256
    greedy: bool = False
    ignore_eos: bool = False  # generate exactly max_new_tokens tokens
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None

    def check(self) -> GenerationRequest:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise BadInput(f"max_new_tokens is {self.max_new_tokens}; it must be at least 1.")
        if not self.greedy:
            check_sampling(self.temperature, self.top_p)
        return self

    @classmethod
    def from_dict(cls, data: Mapping) -> GenerationRequest:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    backend: str  # the route
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

    @classmethod
    def from_dict(cls, data: dict) -> GenerationResult:
        return cls(**{**data, "metrics": Metrics(**data["metrics"])})

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


class Session(ABC):
    """A model loaded on a device, ready to generate. Close it (or use `with`) to free it."""

    def __init__(self, plan: Plan, model: str, load_s: float, device: str | None = None,
                 note: str = "") -> None:
        self.plan = plan
        self.backend, self.precision, self.model = plan.route, plan.precision, model
        self.device = device or plan.device  # what it runs on, e.g. "NPU (emulated on CPU)"
        self.load_s = load_s
        self.device_note = " ".join(filter(None, [plan.note, note]))

    # What callers need to know before they send a prompt.
    context_window: int = 0  # tokens: prompt plus reply
    prompt_limit: int | None = None  # a device's own cap on the prompt (the NPU pipeline's)

    @abstractmethod
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt's token ids, by this route's own chat template and tokenizer."""

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    def generate(self, messages: list[dict], request: GenerationRequest | None = None,
                 streamer: Streamer | None = None, **settings) -> GenerationResult:
        """Reply to `messages`. Settings come as a GenerationRequest, or as its keywords
        (max_new_tokens, greedy, ignore_eos, temperature, top_p, seed)."""
        if request is None:
            request = GenerationRequest(**settings)
        elif settings:
            raise BadInput("Give generation settings as a GenerationRequest or as keywords, "
                           "not both.")
        request.check()
        prompt = self.prompt_ids(messages)
        check_fits(len(prompt), request.max_new_tokens, self.context_window)
        if self.prompt_limit and len(prompt) > self.prompt_limit:
            raise BadInput(f"The prompt is {len(prompt)} tokens, over the prompt limit "
                           f"MAX_PROMPT_LEN of {self.prompt_limit} that {self.device} was loaded "
                           "with. Load with a larger max_prompt_len (--max-prompt-len) or "
                           "shorten the prompt.")
        return self._generate(messages, prompt, request, streamer)

    @abstractmethod
    def _generate(self, messages: list[dict], prompt: list[int], request: GenerationRequest,
                  streamer: Streamer | None) -> GenerationResult:
        """Generate for a checked request; `prompt` is `prompt_ids(messages)`."""

    def result(self, stream: TokenStream, prompt_tokens: int,
               metrics: Metrics | None = None) -> GenerationResult:
        """The result of a finished `stream`; `metrics` if the route measured its own."""
        return GenerationResult(self.backend, self.device, self.precision, self.model,
                                stream.decode(stream.ids), stream.ids, stream.finish_reason,
                                prompt_tokens, metrics or stream.clock.metrics(self.load_s),
                                self.device_note)

    def close(self) -> None:
        """Free the model (and any process holding it). Closing twice does nothing."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Verdict:
    """A route's state on this PC, for `phi3-aipc doctor`."""

    verdict: str  # "ready" (an accelerator), "cpu-only" (it runs, on the CPU) or "missing"
    detail: str
    fix: str | None = None


VERDICTS = ("ready", "cpu-only", "missing")


@dataclass(frozen=True)
class WeightsRead:
    """Bytes of weights one decoding step reads: all but the embedding table (a token reads one
    row of it); and of those, the output layer's. `how`: where the figure comes from."""

    total_mb: float
    output_layer_mb: float
    how: str


class Route(ABC):
    """A way to run Phi-3: what it offers, how to check a request, prepare and load."""

    name: str
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    default_precision: str
    default_device: str
    modules: tuple[str, ...] = ()  # Python modules the route needs
    packages: tuple[str, ...] = ()  # pip names of the packages it needs (doctor, manifests)
    install_hint: str = ""  # the command that installs them
    options: tuple[Option, ...] = ()  # its own settings (prepare and load keywords, CLI flags)
    doctor_key: str | None = None  # the doctor report's key for `facts()`

    # --- what it is -------------------------------------------------------------------------
    def is_installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def devices_here(self) -> list[str]:
        """The devices this route can use on this PC, the default first. Routes that can ask
        their runtime override it; the others list what they offer."""
        return [self.default_device, *(d for d in self.devices if d != self.default_device)]

    def picker_devices(self) -> list[str]:
        """What a device picker offers: the devices here, and any the runtime chooses itself."""
        return self.devices_here() if self.is_installed() else [self.default_device]

    def facts(self) -> dict:
        """What this route's runtime reports on this PC (doctor's `doctor_key` entry)."""
        return {}

    def verdict(self, facts: dict, versions: dict) -> Verdict | None:
        """The doctor's verdict from `facts()` and package versions (None: not judged)."""
        return None

    def bench_configs(self, max_prompt_len: int) -> list[dict]:
        """What `phi3-aipc bench` measures: {precision, device, prepare_options,
        load_options} for each configuration this PC can run."""
        here = self.devices_here()
        return [{"precision": p, "device": d} for d in here for p in self.precisions]

    def weights_read(self, artifact: Path, precision: str) -> WeightsRead:
        """Weights read per generated token, counted from the artifact where its format
        allows (the benchmark's roofline)."""
        from ..models import safetensors_params

        total, embedding, head = safetensors_params(artifact)
        per_weight = {"fp32": 4, "fp16": 2, "int8": 1, "int4": 0.5}[precision]
        return WeightsRead((total - embedding) * per_weight / 1e6, head * per_weight / 1e6,
                           f"parameter count x {per_weight} bytes (estimate: the library "
                           "quantizes in memory)")

    def library_caches(self) -> list[tuple[Path, str]]:
        """Folders the route's libraries fill themselves (no manifest), with what they hold."""
        return []

    # --- checking a request -----------------------------------------------------------------
    def plan(self, precision: str | None = None, device: str | None = None,
             prepare_options: Mapping | None = None,
             load_options: Mapping | None = None) -> Plan:
        """Check a request once: options, precision, device, that the route is installed and
        the device is here. Returns the immutable Plan that prepare() and load() take."""
        prepare_options = {k: v for k, v in (prepare_options or {}).items() if v is not None}
        load_options = {k: v for k, v in (load_options or {}).items() if v is not None}
        for stage, given in (("prepare", prepare_options), ("load", load_options)):
            accepted = [o.name for o in self.options if o.stage == stage]
            for key in given:
                if key not in accepted:
                    flag = "--" + key.replace("_", "-")
                    raise BadInput(f"{flag} is not an option of the {self.name} route"
                                   + (f" (its options: {', '.join(accepted)})." if accepted
                                      else "."))
        precision = self.check_precision(precision)
        device, notes = self.choose_device(device)
        if not self.is_installed():
            raise DeviceUnavailable(f"The {self.name} route is not installed in this Python "
                                    f"environment. Install it with: {self.install_hint}")
        plan = Plan(self.name, precision, device, prepare_options, load_options, tuple(notes))
        return self.refine(plan)

    def check_precision(self, precision: str | None) -> str:
        if precision is not None and not isinstance(precision, str):
            raise BadInput(f"precision must be a name such as int4; got {precision!r}.")
        precision = (precision or self.default_precision).lower()
        if precision not in self.precisions:
            raise BadInput(f"The {self.name} route offers precisions {', '.join(self.precisions)}; "
                           f"got {precision!r}.")
        return precision

    def choose_device(self, device: str | None) -> tuple[str, list[str]]:
        """The device by its canonical name (None: the route's default), and notes on the
        choice."""
        device = device or self.default_device
        by_lower = {d.lower(): d for d in self.devices}
        if not isinstance(device, str) or device.lower() not in by_lower:
            raise BadInput(f"The {self.name} route runs on {', '.join(self.devices)}; "
                           f"got device {device!r}.")
        return by_lower[device.lower()], []

    def refine(self, plan: Plan) -> Plan:
        """The route's own checks and normalization of a plan (its options, its device being
        here). Refuses what cannot work, before any export."""
        return plan

    # --- doing it ---------------------------------------------------------------------------
    def own_source(self, plan: Plan, model: str | None) -> ModelSource | None:
        """A ready-made model the route fetches itself (e.g. a prebuilt download), or None."""
        return None

    @abstractmethod
    def prepare(self, plan: Plan, source: ModelSource) -> Path:
        """Return a folder holding the model in this route's format, as the plan says."""

    @abstractmethod
    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        """Load a prepared artifact on the plan's device."""
