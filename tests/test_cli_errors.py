"""Bad input: exit code 2 and one actionable line on stderr, never a traceback."""
import pytest

from phi3_aipc.cli import main

from .conftest import run_cli

GEN = ["generate", "--model", "stand-in"]
CASES = {
    "empty prompt": (GEN + ["--prompt", "  "], "prompt is empty"),
    "zero new tokens": (GEN + ["--prompt", "hi", "--max-new-tokens", "0"], "at least 1"),
    "unknown backend": (GEN + ["--prompt", "hi", "--backend", "llama.cpp"],
                        "Unknown backend 'llama.cpp'. Available: transformers"),
    "precision the route lacks": (GEN + ["--prompt", "hi", "--precision", "int4"],
                                  "offers precisions fp32; got 'int4'"),
    "unknown precision": (GEN + ["--prompt", "hi", "--precision", "int3"], "got 'int3'"),
    "unknown device": (GEN + ["--prompt", "hi", "--device", "NPU"], "runs on cpu; got device"),
    "missing model folder": (["generate", "--model", "./no/such/folder", "--prompt", "hi"],
                             "does not exist"),
    "prompt over the context": (GEN + ["--prompt", "word " * 5000], "context window is 4096"),
    "too many new tokens": (GEN + ["--prompt", "hi", "--max-new-tokens", "5000"],
                            "Lower max_new_tokens"),
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
