"""A route that lives in this one file, for tests/test_architecture.py: it echoes the prompt.

Registering it is one line (`REGISTRY["echo"] = "tests.fake_route:EchoRoute"`); nothing else
in the package names it, yet the CLI, doctor (its facts too), the benchmark and the chat widget
offer it, and the other routes recognise its artifacts (a folder holding echo.json).
"""
from __future__ import annotations

from pathlib import Path

from phi3_aipc.models import ModelSource
from phi3_aipc.routes.base import Route, Verdict
from phi3_aipc.routes.plan import Option, Plan
from phi3_aipc.routes.session import (
    GenerationRequest,
    GenerationResult,
    Session,
    Streamer,
    TokenStream,
)


class EchoRoute(Route):
    name = "echo"
    precisions = ("fp32",)
    devices = ("cpu", "abacus")
    default_precision = "fp32"
    default_device = "cpu"
    install_hint = "nothing to install"
    options = (Option("shout", "load", "reply in capitals", bool),)
    doctor_key = "echo"
    artifact_marker, artifact_kind = "echo.json", "an echo transcript"

    def facts(self) -> dict:
        return {"beads": 91}

    def facts_lines(self, facts: dict) -> list[str]:
        return [f"Echo: an abacus of {facts['beads']} beads"]

    def verdict(self, facts: dict, versions: dict) -> Verdict:
        return Verdict("cpu-only", "The echo route repeats the prompt, word by word.")

    def prepare(self, plan: Plan, source: ModelSource) -> Path:
        return source.path

    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        return EchoSession(plan, model)


class EchoSession(Session):
    context_window = 4096

    def __init__(self, plan: Plan, model: str) -> None:
        super().__init__(plan, model, load_s=0.0)
        self.shout = bool(plan.load_options.get("shout"))

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return [len(word) for m in messages for word in m["content"].split()]

    def _generate(self, messages: list[dict], prompt: list[int], request: GenerationRequest,
                  streamer: Streamer | None) -> GenerationResult:
        words = messages[-1]["content"].split()
        if self.shout:
            words = [w.upper() for w in words]
        stream = TokenStream(lambda ids: " ".join(words[:len(ids)]), set(), False, streamer)
        for i in range(min(len(words), request.max_new_tokens)):
            if stream.push(i):
                break
        return self.result(stream, len(prompt))
