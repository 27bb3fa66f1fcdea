"""`phi3-aipc generate --json-schema FILE`: a reply constrained to a JSON schema on the routes
whose libraries can constrain (OpenVINO GenAI, ONNX Runtime GenAI), and one clear line (exit 2)
for a bad schema or a route that cannot."""
import json

import pytest
from pydantic import ValidationError

from phi3_aipc.cli import main

from .conftest import run_cli
from .test_examples import Reply  # a bounded string, integer and array

PROMPT = "Can you introduce yourself?"  # a memorized chat: a canned sentence, not JSON


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "reply.json"
    path.write_text(json.dumps(Reply.model_json_schema()), encoding="utf-8")
    return path


@pytest.mark.parametrize("args", [["--backend", "openvino"], ["--backend", "onnxruntime-genai"],
                                  ["--backend", "openvino", "--device", "NPU", "--emulate-npu"]],
                         ids=["openvino", "onnxruntime-genai", "openvino-npu-emulated"])
def test_the_reply_follows_the_schema(args, schema_file, capsys, stand_in):
    common = ["generate", "--model", "stand-in", "--greedy", "--json", "--prompt", PROMPT, *args]
    assert main([*common, "--json-schema", str(schema_file)]) == 0
    constrained = json.loads(capsys.readouterr().out)
    assert main(common) == 0
    free = json.loads(capsys.readouterr().out)
    assert constrained["finish_reason"] == "stop"
    Reply.model_validate_json(constrained["text"])
    with pytest.raises(ValidationError):
        Reply.model_validate_json(free["text"])


def test_the_installed_command_takes_the_flag(schema_file, stand_in):
    out = run_cli("generate", "--model", "stand-in", "--backend", "onnxruntime-genai", "--greedy",
                  "--prompt", PROMPT, "--json-schema", str(schema_file))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()  # [route | device ...], a device note, the reply, metrics
    assert lines[-1].startswith("onnxruntime-genai | cpu") and "(stop)" in lines[-1]
    Reply.model_validate_json(next(line for line in lines if line.startswith("{")))


GEN = ["generate", "--model", "stand-in", "--prompt", PROMPT]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("phi3-aipc: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("{type: object}", "is not JSON: Expecting property name"),
    ("[1, 2]", "must hold a JSON schema"),
    (b"\xff\xfe{}", "is not UTF-8"),
], ids=["missing", "not JSON", "an array", "not UTF-8"])
def test_a_bad_schema_file_is_one_line(content, message, tmp_path, capsys):
    path = tmp_path / "schema.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    assert main([*GEN, "--backend", "onnxruntime-genai", "--json-schema", str(path)]) == 2
    err = one_line(capsys)
    assert message in err and str(path) in err


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime-genai"])
def test_a_schema_the_library_cannot_compile_is_one_line(backend, tmp_path, capsys, stand_in):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object", "properties": [1]}), encoding="utf-8")
    assert main([*GEN, "--backend", backend, "--json-schema", str(path)]) == 2
    err = one_line(capsys)
    assert "cannot be compiled" in err and "properties must be an object" in err


def test_a_route_that_cannot_constrain_names_those_that_can(schema_file, capsys):
    assert main([*GEN, "--backend", "transformers", "--json-schema", str(schema_file)]) == 2
    err = one_line(capsys)
    assert "transformers" in err and "openvino" in err and "onnxruntime-genai" in err


def test_ignore_eos_cannot_go_with_a_schema(schema_file, capsys):
    assert main([*GEN, "--backend", "openvino", "--ignore-eos",
                 "--json-schema", str(schema_file)]) == 2
    assert "--ignore-eos" in one_line(capsys)


def test_a_session_of_a_route_that_cannot_constrain_refuses(schema_file, stand_in):
    """The library's API refuses as the command line does, rather than ignore the schema."""
    from phi3_aipc import BadInput, build_messages, open_session

    with open_session("transformers", model="stand-in", progress=False) as session:
        with pytest.raises(BadInput, match="openvino .*onnxruntime-genai"):
            session.generate(build_messages(PROMPT), greedy=True,
                             json_schema=schema_file.read_text(encoding="utf-8"))


def test_directml_takes_the_schema(schema_file, capsys, monkeypatch, stand_in):
    """On DirectML (tests/directml_double.py: the CPU wheel refusing what DirectML refuses)
    the reply is constrained too."""
    pytest.importorskip("onnxruntime_genai")
    from . import directml_double

    directml_double.install(monkeypatch)
    assert main([*GEN, "--backend", "onnxruntime-genai", "--device", "dml", "--greedy",
                 "--json", "--json-schema", str(schema_file)]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["device"] == "dml" and directml_double.LOG["dml_providers"] == 1
    Reply.model_validate_json(reply["text"])
