"""The copy-paste snippets in notebooks/README.md run as written and stream the reply, and
docs/architecture.md's route lifecycle runs as written.

Each snippet is taken from the page, its `model_dir = ...` line pointed at the stand-in's folder
for that route (`phi3-aipc prepare --model stand-in --backend ...`), and run in a Python of its
own: the NPU library's in its environment, the others in this one. A tap on stdout records what
the snippet printed, piece by piece.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc.cache import MANIFEST
from phi3_aipc.envs import npu_library_python
from phi3_aipc.standin import load_chats

from .conftest import NPU_SKIPPED, run_cli

PAGE = Path(__file__).resolve().parents[1] / "notebooks" / "README.md"
ROUTES = ["transformers", "openvino", "onnxruntime-genai", "npu-library"]
CHAT = load_chats()[0]  # the reference material's system prompt and question
# Runs a snippet with stdout tapped; prints what the snippet printed as one JSON line, last.
RUNNER = """
import json, sys
class Tap:
    def __init__(self): self.pieces = []
    def write(self, text): self.pieces.append(text); return len(text)
    def flush(self): pass
real, sys.stdout = sys.stdout, Tap()
try:
    exec(compile(open(sys.argv[1], encoding="utf-8").read(), "snippet", "exec"), {})
finally:
    pieces, sys.stdout = sys.stdout.pieces, real
    print("PIECES " + json.dumps(pieces))
"""


def snippets(page: Path = PAGE) -> dict[str, str]:
    """name -> the code of the ```python block after its `<!-- snippet: name -->` marker."""
    found = re.findall(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)\n```",
                       page.read_text(encoding="utf-8"), re.DOTALL)
    return dict(found)


def test_the_page_has_one_snippet_per_route():
    assert sorted(snippets()) == sorted(ROUTES)


@pytest.mark.parametrize("route", ROUTES)
def test_snippet_streams_the_memorized_reply(route, stand_in, tmp_path):
    if route == "npu-library" and NPU_SKIPPED:
        pytest.skip("no NPU-library environment (PHI3_AIPC_SKIP_NPU, or macOS)")
    code = snippets()[route]
    assert "phi3_aipc" not in code, "a snippet uses the library's own API only"
    assert "<|user|>" not in code, "a snippet takes its prompt from the chat template"
    for message in CHAT["messages"]:  # so the stand-in's memorized reply is the right answer
        assert json.dumps(message["content"]) in code

    prepared = run_cli("prepare", "--model", "stand-in", "--backend", route)
    assert prepared.returncode == 0, prepared.stderr
    folder = prepared.stdout.strip().splitlines()[-1]
    code, n = re.subn(r'^model_dir = ".*"$', f"model_dir = {folder!r}", code, flags=re.M)
    assert n == 1, "a snippet names its folder in one `model_dir = \"...\"` line"
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    python = npu_library_python() if route == "npu-library" else sys.executable
    out = subprocess.run([python, "-c", RUNNER, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    tapped = [line for line in out.stdout.splitlines() if line.startswith("PIECES ")]
    pieces = json.loads(tapped[-1].removeprefix("PIECES "))
    assert CHAT["reply"] in "".join(pieces).strip()
    words = [p for p in pieces if p.strip()]
    assert len(words) >= 5, f"the reply should stream in pieces, not in one print: {pieces}"


def test_the_architecture_pages_lifecycle_runs(stand_in, tmp_path):
    """The five steps as the page shows them, on the stand-in: the plan keeps the option, the
    prepared folder is OpenVINO's channel-wise export (the default one the openvino snippet above
    prepared: about 6-10 s here; a group size of its own would be a new export, 24 s), and the
    session generates."""
    code = snippets(PAGE.parents[1] / "docs" / "architecture.md")["lifecycle"]
    script = tmp_path / "lifecycle.py"
    script.write_text(code + "\nimport json\nprint('RESULT ' + json.dumps({'options': "
                      "dict(plan.prepare_options), 'artifact': str(artifact), 'device': "
                      "result.device, 'text': result.text, 'tokens': len(result.token_ids)}))\n",
                      encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["options"]["group_size"] == -1 and result["device"] == "CPU"
    made = json.loads((Path(result["artifact"]) / MANIFEST).read_text(encoding="utf-8"))
    assert made["options"]["group_size"] == -1 and made["precision"] == "int4"
    assert result["text"].strip() and result["tokens"] > 0
