import json
import os
import subprocess
import sys

import pytest

from phi3_aipc.standin import ensure_stand_in

# Without the NPU-library environment (PHI3_AIPC_SKIP_NPU, or macOS) its tests are skipped.
NPU_SKIPPED = bool(os.environ.get("PHI3_AIPC_SKIP_NPU")) or sys.platform == "darwin"


@pytest.fixture(scope="session")
def stand_in():
    """The stand-in's folder, built once per cache."""
    return ensure_stand_in(progress=False)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300):
    """Run the installed `phi3-aipc` console script as a user would."""
    exe = os.path.join(os.path.dirname(sys.executable), "phi3-aipc")
    full_env = {**os.environ, **(env or {})}
    for key, value in list(full_env.items()):
        if value is None:
            del full_env[key]
    return subprocess.run([exe, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def cli_json(*args: str) -> dict:
    """`phi3-aipc generate --model stand-in --json ARGS`, which must succeed, as a dict."""
    out = run_cli("generate", "--model", "stand-in", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# Strings a tokenizer port gets wrong first: accents, CJK, emoji with modifiers, tabs and CRLF,
# runs of spaces, leading and trailing spaces, special tokens typed as text.
PARITY_STRINGS = [
    "Can you introduce yourself?", "héllo wörld, café crème", "日本語のテキストです",
    "emoji 🙂👍🏽 end", "def f(x):\n\treturn x ** 2\r\n", "  two leading spaces",
    "a    b     c", " one leading space", "trailing space ",
    "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
    "a literal <|end|> typed by a user",
]
