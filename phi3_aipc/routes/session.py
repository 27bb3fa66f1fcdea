"""A model loaded on a device, and what generating with it takes and gives: one
GenerationRequest for every route, a GenerationResult with the ids, text and timings."""
from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields

from ..chat import check_fits, check_messages, check_sampling, check_seed
from ..errors import BadInput
from ..processes import peak_rss_mb
from ..structured import check_schema
from .plan import Plan
from .registry import cannot_constrain

# Gets each new piece of text; returning True asks generation to end there ("stopped").
Streamer = Callable[[str], "bool | None"]


@dataclass(frozen=True)
class GenerationRequest:
    """How to generate: every route takes these same settings."""

    max_new_tokens: int = 256
    greedy: bool = False
    ignore_eos: bool = False  # generate exactly max_new_tokens tokens
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None
    # A JSON schema (JSON text) the reply must follow: constrained decoding, on the routes
    # that offer it (Route.constrained_devices).
    json_schema: str | None = None

    def check(self) -> GenerationRequest:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise BadInput(f"max_new_tokens is {self.max_new_tokens}; it must be at least 1.")
        if not self.greedy:
            check_sampling(self.temperature, self.top_p)
        check_seed(self.seed)
        if self.json_schema is not None:
            check_schema(self.json_schema)
            if self.ignore_eos:
                raise BadInput("ignore_eos (--ignore-eos) cannot go with a JSON schema: the "
                               "schema's grammar ends the reply when the JSON is complete.")
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
    route: str  # "backend" in its JSON, as before the routes were called routes
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
        """The result as JSON has it: the route under its documented key, "backend"."""
        return {"backend" if k == "route" else k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> GenerationResult:
        fields_ = {"route" if k == "backend" else k: v for k, v in data.items()}
        return cls(**{**fields_, "metrics": Metrics(**data["metrics"])})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def summary(self) -> str:
        m = self.metrics
        fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
        return (f"{self.route} | {self.device} | {self.precision} | {self.model} | "
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
        self.route, self.precision, self.model = plan.route, plan.precision, model
        self.device = device or plan.device  # what it runs on, e.g. "NPU (emulated on CPU)"
        self.load_s = load_s
        self.device_note = " ".join(filter(None, [plan.note, note]))

    # What callers need to know before they send a prompt.
    context_window: int = 0  # tokens: prompt plus reply
    prompt_limit: int | None = None  # a device's own cap on the prompt (the NPU pipeline's)
    logits_note: str = ""  # where `logits` come from, when not from the device generating

    @abstractmethod
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt's token ids, by this route's own chat template and tokenizer."""

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    def generate(self, messages: list[dict], request: GenerationRequest | None = None,
                 streamer: Streamer | None = None, **settings) -> GenerationResult:
        """Reply to `messages`. Settings come as a GenerationRequest, or as its keywords
        (max_new_tokens, greedy, ignore_eos, temperature, top_p, seed, json_schema)."""
        if request is None:
            unknown = sorted(set(settings) - {f.name for f in fields(GenerationRequest)})
            if unknown:
                raise BadInput(f"Unknown generation setting {', '.join(unknown)}; the settings "
                               f"are {', '.join(f.name for f in fields(GenerationRequest))}.")
            request = GenerationRequest(**settings)
        elif settings:
            raise BadInput("Give generation settings as a GenerationRequest or as keywords, "
                           "not both.")
        request.check()
        if request.json_schema is not None and (
                refusal := cannot_constrain(self.route, self.plan.device)):
            raise refusal
        messages = check_messages(messages)
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

    def logits(self, ids: list[int]):
        """The next-token logits at every position of `ids`, read from an empty context (a
        numpy array, [len(ids), vocabulary]): what `phi3-aipc quality` compares."""
        raise BadInput(f"The {self.route} route cannot give next-token logits on "
                       f"{self.device}.")

    def result(self, stream: TokenStream, prompt_tokens: int,
               metrics: Metrics | None = None) -> GenerationResult:
        """The result of a finished `stream`; `metrics` if the route measured its own."""
        return GenerationResult(self.route, self.device, self.precision, self.model,
                                stream.decode(stream.ids), stream.ids, stream.finish_reason,
                                prompt_tokens, metrics or stream.clock.metrics(self.load_s),
                                self.device_note)

    def close(self) -> None:
        """Free the model (and any process holding it). Closing twice does nothing."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
