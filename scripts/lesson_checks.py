"""The lesson checks: the cells that teach, tagged in a notebook's metadata (`check:reply-N`,
`check:second-turn`, ...), and what each one's output must show. `scripts/build_docs.py` runs
them on every notebook it executes; a lesson that prints the wrong text fails the build.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHATS = json.loads((ROOT / "data" / "standin_chats.json").read_text(encoding="utf-8"))["chats"]
SECOND_TURN = CHATS[5]["reply"]


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(str(out.data.get("text/markdown") or out.data.get("text/plain", "")))
    return "".join(parts)


def check(name: str, nb, routes: list[str]) -> list[str]:
    """What is wrong with the outputs of the tagged cells of notebook `name`."""
    problems = []
    for i, cell in enumerate(nb.cells):
        for tag in cell.get("metadata", {}).get("tags", []):
            if not tag.startswith("check:"):
                continue
            what, out = tag[len("check:"):], text_of(cell)
            if what.startswith("reply-"):
                want = CHATS[int(what.split("-")[1])]["reply"]
                ok = want in out
            elif what == "second-turn":
                want = SECOND_TURN
                ok = want in out
            elif what == "end-token":
                want, ok = "<|end|>", "ended with: <|end|>" in out
            elif what == "installed":  # the suite's environment has the pins: no pip run
                want = "Already installed"
                ok = want in out and "Installed." not in out
            elif what == "max-prompt-len":
                want, ok = "MAX_PROMPT_LEN", "MAX_PROMPT_LEN" in out
            elif what == "stopped":
                want = "stopped after, before the full reply"
                ok = "stopped after" in out and CHATS[1]["reply"] not in out
            elif what == "valid-json":  # notebook 06: a constrained reply, validated
                want = "Valid: "
                ok = want in out
            elif what == "invalid-json":  # notebook 06: the same prompt unconstrained
                want = "Not valid:"
                ok = want in out and "Valid (this time)" not in out
            elif what == "tool-call":
                want = "Called get_weather("
                ok = want in out
            elif what == "bench-table":
                want = f"a row for each of {routes} and no skipped row"
                ok = all(f"| {r} " in out for r in routes) and "skipped" not in out
            elif what == "quality-table":
                want = f"a row with figures for each of {routes}"
                ok = (all(f"| {r} " in out for r in routes) and "not measured" not in out
                      and "nan" not in out)
            else:
                problems.append(f"{name} cell {i}: unknown check {tag!r}")
                continue
            if not ok:
                problems.append(f"{name} cell {i} ({tag}): expected {want!r} in its output, "
                                f"got {out[-300:]!r}")
    return problems
