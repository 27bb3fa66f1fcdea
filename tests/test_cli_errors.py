"""Bad input: exit code 2 and one actionable line on stderr, never a traceback; a bug: exit code 1
and one line; Ctrl+C: exit code 130 and one line."""
import json
import os
import tempfile
from pathlib import Path

import pytest

from phi3_aipc.cli import main

from .conftest import run_cli
from .portable import cli, first_line_then_close, unmakeable_folder

FOLDER = tempfile.gettempdir()  # a folder every platform has

GEN = ["generate", "--model", "stand-in"]
CASES = {
    "empty prompt": (GEN + ["--prompt", "  "], "prompt is empty"),
    "zero new tokens": (GEN + ["--prompt", "hi", "--max-new-tokens", "0"], "at least 1"),
    "unknown backend": (GEN + ["--prompt", "hi", "--backend", "llama.cpp"],
                        "Unknown route 'llama.cpp'. Available: transformers"),
    "precision the route lacks": (GEN + ["--prompt", "hi", "--precision", "int4"],
                                  "offers precisions fp32; got 'int4'"),
    "unknown precision": (GEN + ["--prompt", "hi", "--precision", "int3"], "got 'int3'"),
    "unknown device": (GEN + ["--prompt", "hi", "--device", "NPU"], "runs on cpu; got device"),
    "missing model folder": (["generate", "--model", "./no/such/folder", "--prompt", "hi"],
                             "does not exist"),
    "prompt over the context": (GEN + ["--prompt", "word " * 5000], "context window is 4096"),
    "too many new tokens": (GEN + ["--prompt", "hi", "--max-new-tokens", "5000"],
                            "Lower max_new_tokens"),
    "zero temperature": (GEN + ["--prompt", "hi", "--temperature", "0"], "temperature must be"),
    "top-p over 1": (GEN + ["--prompt", "hi", "--top-p", "1.5"], "top_p must be in (0, 1]"),
    # found by fuzzing: a tiny temperature divides the logits into infinities, a huge seed
    # overflows the libraries' 32-bit seeds (tracebacks before)
    "tiny temperature": (GEN + ["--prompt", "hi", "--temperature", "1e-300"],
                         "temperature must be between 0.01 and 100.0"),
    "infinite temperature": (GEN + ["--prompt", "hi", "--temperature", "inf"],
                             "temperature must be between 0.01 and 100.0"),
    "nan top-p": (GEN + ["--prompt", "hi", "--top-p", "nan"], "top_p must be in (0, 1]"),
    "huge seed": (GEN + ["--prompt", "hi", "--seed", str(10**20)],
                  "seed must be a whole number from 0 to 4294967295"),
    "negative seed": (GEN + ["--prompt", "hi", "--seed", "-1"], "seed must be a whole number"),
    # refused before minutes of measuring, not when the report is written
    "bench report into no folder": (["bench", "--model", "stand-in", "--json", "/no/such/r.json"],
                                    f"--json /no/such/r.json: the folder {Path('/no/such')} "
                                    "does not exist"),
    "bench csv onto a folder": (["bench", "--model", "stand-in", "--csv", FOLDER],
                                f"--csv {FOLDER} is a folder"),
    "bench lengths of 0": (["bench", "--model", "stand-in", "--lengths", "0,5"],
                           "--lengths takes positive token counts"),
}


@pytest.mark.parametrize("args,message", CASES.values(), ids=CASES.keys())
def test_bad_input(args, message, capsys, stand_in):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("phi3-aipc: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_code():
    out = run_cli("generate", "--model", "stand-in", "--prompt", "")
    assert out.returncode == 2
    assert out.stderr.strip() == "phi3-aipc: error: The prompt is empty. Type a question or " \
        "instruction."


def folder_of_another_architecture(tmp_path, stand_in):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    return tmp_path


def folder_without_weights(tmp_path, stand_in):
    (tmp_path / "config.json").write_text('{"model_type": "phi3"}')
    return tmp_path


def damaged_export(tmp_path, stand_in):
    """A finished OpenVINO export whose weights were truncated afterwards."""
    from phi3_aipc.routes import prepare

    export = prepare("openvino", "int8", model="stand-in")
    copy = tmp_path / "export"
    import shutil

    shutil.copytree(export, copy)
    with open(copy / "openvino_model.bin", "r+b") as f:
        f.truncate(1000)
    return copy


FOLDERS = {
    "another architecture": (folder_of_another_architecture, [], "'llama' model, not Phi-3"),
    "no weights": (folder_without_weights, [], "no weight files"),
    "damaged export": (damaged_export, ["--backend", "openvino", "--precision", "int8"],
                       "is damaged: openvino_model.bin has 1000 bytes"),
}


@pytest.mark.parametrize("make,args,message", FOLDERS.values(), ids=FOLDERS.keys())
def test_bad_model_folders(make, args, message, tmp_path, stand_in, capsys):
    folder = make(tmp_path, stand_in)
    capsys.readouterr()  # what making the folder printed (an export's progress) is not the CLI's
    assert main(["generate", "--model", str(folder), "--prompt", "hi", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phi3-aipc: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["--backend", "openvino", "--precision", "fp8"], "offers precisions int4, int8, fp16, fp32"),
    (["--backend", "onnxruntime-genai", "--precision", "int8"], "offers precisions int4, fp16"),
    (["--backend", "npu-library", "--precision", "fp32"], "offers precisions int4, int8, fp16"),
    (["--backend", "openvino", "--device", "dml"], "runs on CPU, GPU, NPU, AUTO"),
    (["--backend", "openvino", "--block-size", "32"], "--block-size is not an option of the "
                                                      "openvino route"),
])
def test_precisions_devices_and_options_a_route_lacks(args, message, capsys):
    assert main(["generate", "--model", "stand-in", "--prompt", "hi", *args]) == 2
    assert message in capsys.readouterr().err


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--max-new-tokens", "many", "--prompt", "hi"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == ("phi3-aipc: error: argument --max-new-tokens: invalid int value: 'many' "
                   "(see: phi3-aipc generate --help)\n")


def broken_models_command(args):
    raise ValueError("first line\nsecond line")


def break_models_command(monkeypatch):
    from phi3_aipc.cli import COMMANDS

    help, flags, _ = COMMANDS["models"]
    monkeypatch.setitem(COMMANDS, "models", (help, flags, broken_models_command))


def test_an_unexpected_exception_is_one_line_naming_a_bug(monkeypatch, capsys):
    break_models_command(monkeypatch)
    monkeypatch.delenv("PHI3_AIPC_DEBUG", raising=False)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("phi3-aipc: internal error (a bug in phi3-aipc): ValueError: first "
                          "line second line")
    assert "PHI3_AIPC_DEBUG=1" in err


def test_phi3_aipc_debug_shows_the_traceback(monkeypatch, capsys):
    break_models_command(monkeypatch)
    monkeypatch.setenv("PHI3_AIPC_DEBUG", "1")
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in broken_models_command" in err
    assert err.splitlines()[-1].startswith("phi3-aipc: internal error")


@pytest.mark.skipif(os.name == "nt", reason="Ctrl+C reaches a child alone only as POSIX's "
                    "SIGINT: on Windows it goes to the whole console, a child in a process group "
                    "of its own ignores it, and CTRL_BREAK_EVENT is no KeyboardInterrupt "
                    "(tests/test_interrupts.py covers the interrupt itself)")
def test_ctrl_c_exits_130_with_one_line(stand_in):
    import signal
    import subprocess

    proc = subprocess.Popen([cli(), "generate", "--model", "stand-in", "--prompt", "hi",
                             "--ignore-eos", "--max-new-tokens", "4000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a shell's background job ignores SIGINT,
                            # and its children would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().startswith("[transformers | cpu | fp32 | stand-in]")
    proc.send_signal(signal.SIGINT)  # mid-reply: 4000 tokens take far longer than this
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "phi3-aipc: interrupted." and "Traceback" not in err


@pytest.mark.parametrize("where", ["a-file", "a-file/below", "nowhere"])
def test_an_unusable_cache_folder_is_one_line(where, tmp_path):
    """PHI3_AIPC_CACHE on a file, under a file, or where nothing can be made (found by fuzzing:
    tracebacks before)."""
    (tmp_path / "a-file").write_text("not a folder")
    cache = unmakeable_folder(tmp_path) if where == "nowhere" else str(tmp_path / where)
    for args in (["cache", "list"], ["generate", "--model", "stand-in", "--prompt", "hi"]):
        out = run_cli(*args, env={"PHI3_AIPC_CACHE": cache})
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"phi3-aipc: error: The cache folder {cache} cannot be used")
        assert "PHI3_AIPC_CACHE" in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.parametrize("made_by,given_to", [
    ("openvino", "onnxruntime-genai"), ("openvino", "transformers"),
    ("onnxruntime-genai", "openvino"), ("onnxruntime-genai", "transformers")])
def test_one_routes_build_given_to_another_is_one_line(made_by, given_to, stand_in, capsys):
    """Found by fuzzing: the builder's own traceback, or an internal error, before."""
    from phi3_aipc.routes import prepare

    folder = prepare(made_by, "int4", "cpu" if made_by == "onnxruntime-genai" else None,
                     "stand-in")
    capsys.readouterr()  # what building it printed, where this test is the first to need it
    assert main(["generate", "--route", given_to, "--model", str(folder), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert f"which the {given_to} route cannot read. Use --route {made_by} with it" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("manifest", [b"\xff\xfe not utf-8", b"[1, 2]", b"{not json",
                                      b'{"files": 5, "route": [1], "options": 3}'])
def test_a_damaged_manifest_is_a_damaged_folder(manifest, stand_in, tmp_path, capsys):
    """Found by fuzzing (internal errors before): given with --model, the folder is refused as
    damaged; in the cache, `cache list` shows it and does not crash."""
    import shutil

    from phi3_aipc.cache import MANIFEST
    from phi3_aipc.routes import prepare

    copy = tmp_path / "export"
    shutil.copytree(prepare("openvino", "int8", model="stand-in"), copy)
    (copy / MANIFEST).write_bytes(manifest)
    assert main(["generate", "--route", "openvino", "--precision", "int8", "--model", str(copy),
                 "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert f"{copy} is damaged: its manifest {MANIFEST}" in err and err.count("\n") == 1
    cached = tmp_path / "cache" / "openvino" / "stand-in" / "int8-0123"
    shutil.copytree(copy, cached)
    out = run_cli("cache", "list", env={"PHI3_AIPC_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0 and "1 cached folders" in out.stdout, out.stderr


def set_config(key, value):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
    return change


def truncate(size):
    def change(folder):
        with open(folder / "model.safetensors", "r+b") as f:
            f.truncate(size)
    return change


DAMAGED_CHECKPOINTS = {
    # a config that promises 200000 layers was built (and ate the memory) before anything failed
    "200000 layers": (set_config("num_hidden_layers", 200000),
                      "config.json describes 32.83 billion weights, but the weight files hold"),
    "a shape that is text": (set_config("hidden_size", "big"),
                             "config.json's hidden_size is 'big', not a positive whole number"),
    "config not an object": (lambda f: (f / "config.json").write_text("[]"),
                             "config.json is damaged (not a JSON object)"),
    "empty tokenizer.json": (lambda f: (f / "tokenizer.json").write_text(""),
                             "tokenizer.json is damaged (not a JSON object)"),
    "header cut": (truncate(1000), "a *.safetensors file is damaged"),
    "weights cut": (truncate(5_000_000), "bytes shorter than its header says"),
    # each route's tokenizer failed on these differently (a torch error, jinja, RuntimeError)
    "empty chat_template.jinja": (lambda f: (f / "chat_template.jinja").write_text(""),
                                  "chat_template.jinja is empty"),
    "broken chat_template.jinja": (lambda f: (f / "chat_template.jinja").write_text("{{ bad"),
                                   "chat_template.jinja is not a valid template"),
}


@pytest.mark.parametrize("change,message", DAMAGED_CHECKPOINTS.values(),
                         ids=DAMAGED_CHECKPOINTS.keys())
def test_a_damaged_checkpoint_is_one_line(change, message, stand_in, tmp_path, capsys):
    """Found by fuzzing: internal errors from the libraries, or a model of 200000 layers
    allocated, before."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(stand_in, folder)
    change(folder)
    assert main(["generate", "--model", str(folder), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_output_cut_short_by_the_reader_is_not_an_error():
    """`phi3-aipc models | head -1`: the pipe closes early, which is not a bug to report."""
    first, err = first_line_then_close([cli(), "models"], timeout=120)
    assert first.startswith("microsoft/Phi-3-mini-4k-instruct")
    assert err == ""
