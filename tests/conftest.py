import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc.standin import ensure_stand_in

# Without the NPU-library environment (PHI3_AIPC_SKIP_NPU, or macOS) its tests are skipped.
NPU_SKIPPED = bool(os.environ.get("PHI3_AIPC_SKIP_NPU")) or sys.platform == "darwin"


@pytest.fixture(scope="session")
def stand_in():
    """The stand-in's folder, built once per cache."""
    return ensure_stand_in(progress=False)


@pytest.fixture(scope="session")
def built(stand_in, tmp_path_factory):
    """`built(cache, *route_options)`: the stand-in folder's export for those `prepare` options,
    made once per test session and copied into `cache`. A test that damages, clears or lists a
    cache needs one of its own, not another export (the copy is checked in full once, then
    adopted, as any copied cache is). Tests of the building itself still build."""
    made = tmp_path_factory.mktemp("built")

    def into(cache: Path, *options: str) -> None:
        template = made / "-".join(o.strip("-") for o in options)
        if not template.exists():
            out = run_cli("prepare", *options, "--model", str(stand_in),
                          env={"PHI3_AIPC_CACHE": str(template)})
            assert out.returncode == 0, out.stderr
        shutil.copytree(template, cache, dirs_exist_ok=True)
    return into


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
