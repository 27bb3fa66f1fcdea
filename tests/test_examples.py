"""The scripts in examples/ run as a user runs them: a piped conversation on the stand-in.

Each is a standalone chat program (only its library, no phi3_aipc), so each is started as a
separate Python process with the stand-in's exports (notebooks 02 and 03's, made once per test
session) and two questions on its standard input. The stand-in memorized both turns of a chat,
so the replies are known: a second turn that lost the first one gives another reply.
"""
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from phi3_aipc.standin import load_chats

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHATS = load_chats()
FIRST, SECOND = CHATS[0], CHATS[5]  # chat 5 is chat 0 continued
QUESTIONS = [FIRST["messages"][-1]["content"], SECOND["messages"][-1]["content"]]
SYSTEM = FIRST["messages"][0]["content"]
assert SECOND["messages"][:3] == FIRST["messages"] + [
    {"role": "assistant", "content": FIRST["reply"]}]


class Reply(BaseModel):
    """A small schema with a string, an integer and an array, all bounded (an unbounded string
    lets a model that never closes its quotes run until max_new_tokens)."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    tags: list[Annotated[str, StringConstraints(max_length=8)]] = Field(max_length=3)


@pytest.fixture(scope="module")
def exports(stand_in):
    from phi3_aipc.exports import onnx_int4, openvino_int4

    return {"openvino": openvino_int4(), "onnxruntime_genai": onnx_int4()}


# Run before the script, for the ORT GenAI tests: the CPU wheel playing DirectML
# (tests/directml_double.py), or the real generator counted; either way the log ends stderr.
DIRECTML = "from tests.directml_double import LOG, install; install()"
COUNTED = """import onnxruntime_genai as og
LOG = {"generators": 0, "appended": 0}
class Counted(og.Generator):
    def __init__(self, model, params):
        super().__init__(model, params)
        LOG["generators"] += 1
    def append_tokens(self, tokens):
        super().append_tokens(tokens)
        LOG["appended"] += 1
og.Generator = Counted"""


def run(script: str, *args: str, stdin: str = "\n".join(QUESTIONS) + "\n",
        before: str = "") -> subprocess.CompletedProcess:
    """`python examples/<script>_chat.py ARGS` with `stdin` piped in, after the code `before`
    (which defines LOG) when given."""
    path = str(EXAMPLES / f"{script}_chat.py")
    cmd = [sys.executable, path, *args]
    if before:
        code = "\n".join([
            "import atexit, json, runpy, sys", f"sys.path.insert(0, {str(ROOT)!r})", before,
            "atexit.register(lambda: print('LOG', json.dumps(LOG), file=sys.stderr))",
            f"sys.argv = {[path, *args]!r}", "runpy.run_path(sys.argv[0], run_name='__main__')"])
        cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, encoding="utf-8",
                          timeout=300, cwd=ROOT)


def log_of(out: subprocess.CompletedProcess) -> dict:
    return json.loads(out.stderr.rsplit("LOG", 1)[1])


def replies(out: subprocess.CompletedProcess) -> list[str]:
    assert out.returncode == 0, out.stderr
    turns = out.stdout.split("----------")
    assert turns[-1].strip() == "question:"  # asked again, then the input ended
    return [turn.split("question:\n", 1)[1].strip() for turn in turns[:-1]]


def test_openvino_chats_two_turns(exports):
    said = replies(run("openvino", str(exports["openvino"]), "CPU", "--system", SYSTEM))
    assert said == [FIRST["reply"], SECOND["reply"]]


def test_onnxruntime_genai_continues_one_generator_on_the_cpu(exports):
    out = run("onnxruntime_genai", str(exports["onnxruntime_genai"]), "cpu", "--system", SYSTEM,
              before=COUNTED)
    assert replies(out) == [FIRST["reply"], SECOND["reply"]]
    log = log_of(out)
    assert log["generators"] == 1 and log["appended"] == 3  # the prompt, the stop, turn two


def test_onnxruntime_genai_starts_a_generator_per_turn_on_directml(exports):
    """DirectML refuses tokens on a generator that has generated (the double refuses as the
    library does): the script must start a new one per reply, fed the whole conversation."""
    out = run("onnxruntime_genai", str(exports["onnxruntime_genai"]), "dml", "--system", SYSTEM,
              before=DIRECTML)
    assert replies(out) == [FIRST["reply"], SECOND["reply"]]
    log = log_of(out)
    assert log["dml_providers"] == 1 and log["generators"] == 2 and log["refused"] == 0


@pytest.mark.parametrize("script", ["openvino", "onnxruntime_genai"])
def test_json_schema_makes_every_reply_valid(exports, script, tmp_path):
    """With --json-schema both replies of the conversation parse and validate; without it the
    same conversation does not (the stand-in's replies are canned sentences)."""
    schema = tmp_path / "reply.json"
    schema.write_text(json.dumps(Reply.model_json_schema()), encoding="utf-8")
    free = replies(run(script, str(exports[script]), "--system", SYSTEM))
    constrained = replies(run(script, str(exports[script]), "--system", SYSTEM,
                              "--json-schema", str(schema)))
    assert len(free) == len(constrained) == 2
    for text in constrained:
        Reply.model_validate_json(text)
    for text in free:
        with pytest.raises(ValidationError):
            Reply.model_validate_json(text)


@pytest.mark.parametrize("script", ["openvino", "onnxruntime_genai"])
def test_a_schema_that_is_not_json_is_one_line(exports, script, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{name: str}", encoding="utf-8")
    out = run(script, str(exports[script]), "--json-schema", str(bad), stdin="")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "--json-schema" in last and "bad.json" in last and "double quotes" in last
    missing = run(script, str(exports[script]), "--json-schema", str(tmp_path / "none.json"),
                  stdin="")
    assert missing.returncode == 2 and "none.json" in missing.stderr.strip().splitlines()[-1]
