"""The lesson checks: the cells that teach, tagged in a notebook's metadata (`check:reply-N`,
`check:second-turn`, ...), and what each one's output must show. `scripts/build_docs.py` runs
them on every notebook it executes; a lesson that prints the wrong text fails the build.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHATS = json.loads((ROOT / "data" / "standin_chats.json").read_text(encoding="utf-8"))["chats"]
SECOND_TURN = CHATS[5]["reply"]
RECAP_HEAD = "| what ran | device | precision | tokens/s | first token | memory |"
FIGURES = {"tokens/s": re.compile(r"\d+(\.\d+)?"), "first token": re.compile(r"\d+(\.\d+)? ms"),
           "memory": re.compile(r"\d+(\.\d+)? GB( \(.+\))?")}


def recap_problems(out: str) -> list[str]:
    """What a notebook's recap table lacks: each row names what ran, its device and precision,
    and this run's figures (tokens/s above 0, the first token in ms, memory in GB). A row may
    instead say `not run` with its reason in the second column (an NPU section without an NPU);
    at least one row must have run."""
    if RECAP_HEAD not in out:
        return [f"no recap table (its header {RECAP_HEAD!r})"]
    problems, ran = [], 0
    for line in out.split(RECAP_HEAD, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[1].startswith("not run"):
            continue
        if len(cells) != 6:
            problems.append(f"a row without six cells: {line!r}")
            continue
        what, device, precision, *figures = cells
        for name, cell in (("what ran", what), ("device", device), ("precision", precision)):
            if not cell or cell.lower() in ("none", "nan", "n/a", "?", "unknown"):
                problems.append(f"{name} missing in {line!r}")
        for (name, pattern), cell in zip(FIGURES.items(), figures):
            if not pattern.fullmatch(cell):
                problems.append(f"{name} is {cell!r}, not a figure, in {line!r}")
        if FIGURES["tokens/s"].fullmatch(figures[0]) and float(figures[0]) <= 0:
            problems.append(f"tokens/s is 0 in {line!r}")
        ran += 1
    return problems + ([] if ran else ["no row that ran"])


INTEL = json.loads((ROOT / "data" / "intel_published.json").read_text(encoding="utf-8"))
INTEL_HEAD = "| where | device | OpenVINO | prompt tokens | first token | tokens/s |"


def intel_table_problems(out: str) -> list[str]:
    """What notebook 04's table of Intel's published figures lacks: a row for each row of
    data/intel_published.json and one for this PC, each with a prompt length, a first token in
    ms and a speed above 0 (no nan)."""
    if INTEL_HEAD not in out:
        return [f"no table of Intel's figures (its header {INTEL_HEAD!r})"]
    problems, intel, mine = [], 0, 0
    for line in out.split(INTEL_HEAD, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6:
            problems.append(f"a row without six cells: {line!r}")
            continue
        intel += cells[0].endswith("(Intel's)")
        mine += cells[0].startswith("**this PC**")
        prompt, first, speed = cells[3:]
        if not (prompt.isdigit() and re.fullmatch(r"\d+(\.\d+)? ms", first)
                and re.fullmatch(r"\d+(\.\d+)?", speed) and float(speed) > 0):
            problems.append(f"a row without its figures: {line!r}")
    if intel != len(INTEL["rows"]):
        problems.append(f"{intel} rows of Intel's, not {len(INTEL['rows'])}")
    if mine != 1:
        problems.append(f"{mine} rows for this PC, not 1")
    return problems


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
            elif what in ("recap", "intel-table"):  # every notebook's last lesson: what ran,
                # where, how fast; notebook 04's Intel figures beside this PC's
                found = (recap_problems if what == "recap" else intel_table_problems)(out)
                if found:
                    problems.append(f"{name} cell {i} ({tag}): the table is incomplete: "
                                    f"{'; '.join(found)}; got {out[-600:]!r}")
                continue
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
