"""`make docs` builds the rendered site, and the cells that teach print what they should.

Every notebook runs once more here (nbclient), and the outputs of its tagged cells are checked:
the stand-in's fixed replies streamed by each library's own code, the second turn of each chat,
notebook 04's table with a row per route, the stops in notebook 05.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_docs", ROOT / "scripts" / "build_docs.py")
build_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_docs)


@pytest.fixture(scope="module")
def site(tmp_path_factory, stand_in):
    out = tmp_path_factory.mktemp("site")
    names = None if sys.platform != "darwin" else [
        p.stem for p in (ROOT / "notebooks").glob("*.ipynb") if not p.stem.startswith("01")]
    return out, build_docs.build(out, names)


def test_every_tagged_output_is_what_the_lesson_prints(site):
    _, problems = site
    assert problems == []


def test_each_page_shows_its_outputs(site):
    out, _ = site
    pages = {p.stem: p.read_text(encoding="utf-8") for p in out.glob("0*.html")}
    assert len(pages) >= 5
    reply = build_docs.CHATS[0]["reply"]
    for name in ("00_check_your_ai_pc", "02_directml_onnxruntime_genai", "03_openvino"):
        assert reply in pages[name], name
    # A streamed reply is one output, not one line per piece.
    assert "<pre>I am the phi3-aipc stand-in, a tiny offline model." in pages["03_openvino"]
    assert "application/vnd.jupyter.widget-state+json" in pages["05_chat"]  # the chat renders
    assert (out / "index.html").is_file()


def test_a_wrong_reply_fails_the_check():
    """The check can fail: a cell whose output lost the reply is reported."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('x')", metadata={"tags": ["check:reply-0"]})
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="something else")]
    nb.cells = [cell]
    assert build_docs.check("x", nb, []) and "expected" in build_docs.check("x", nb, [])[0]
