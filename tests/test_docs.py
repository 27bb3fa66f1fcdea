"""`make docs` builds the rendered site, and the cells that teach print what they should.

The checks of the tagged cells (the stand-in's fixed replies streamed by each library's own code,
the second turn of each chat, notebook 04's tables with a row per route, the stops in notebook
05) run inside nbval's run of every notebook (conftest.py), so a lesson that prints the wrong
text fails there. Here the site is built for the two notebooks whose pages show the most (a
streamed reply, the chat widget's saved state), to check the rendering itself.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_docs", ROOT / "scripts" / "build_docs.py")
build_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_docs)
PAGES = ["03_openvino", "05_chat"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, stand_in):
    out = tmp_path_factory.mktemp("site")
    return out, build_docs.build(out, PAGES)


@pytest.mark.slow
def test_the_built_pages_lessons_print_what_they_should(site):
    _, problems = site
    assert problems == []


@pytest.mark.slow
def test_each_page_shows_its_outputs(site):
    out, _ = site
    pages = {p.stem: p.read_text(encoding="utf-8") for p in out.glob("0*.html")}
    assert sorted(pages) == PAGES
    assert build_docs.CHATS[0]["reply"] in pages["03_openvino"]
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


def test_nbval_fails_a_lesson_that_prints_the_wrong_reply(tmp_path):
    """The same checks run inside nbval's own run of the notebooks (conftest.py): a tagged cell
    that runs without error but prints the wrong reply fails there too, and the right one
    passes."""
    import os
    import subprocess

    import nbformat

    for name, printed, outcome in (("wrong", "something else", "1 failed"),
                                   ("right", build_docs.CHATS[0]["reply"], "1 passed")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f"print({printed!r})",
                                              metadata={"tags": ["check:reply-0"]})]
        path = ROOT / "notebooks" / f".{name}-{os.getpid()}.ipynb"  # under the root conftest
        nbformat.write(nb, path)
        try:
            out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p",
                                  "no:cacheprovider", str(path)], cwd=ROOT, capture_output=True,
                                 text=True, timeout=300,
                                 env={**os.environ, "PHI3_AIPC_MODEL": "stand-in"})
        finally:
            path.unlink()
        assert outcome in out.stdout, out.stdout[-2000:]
        if name == "wrong":
            assert "(check:reply-0): expected" in out.stdout, out.stdout[-2000:]
