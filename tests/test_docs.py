"""`make docs` builds the site (Sphinx + MyST-NB), and the cells that teach print what they should.

The checks of the tagged cells (the stand-in's fixed replies streamed by each library's own code,
the second turn of each chat, notebook 04's tables with a row per route, the stops in notebook
05) run inside nbval's run of every notebook (conftest.py), so a lesson that prints the wrong
text fails there. Here the whole site is built as CI builds it: the README, every page of docs/
and every notebook, with the two notebooks whose pages show the most (a streamed reply, the chat
widget's saved state) executed and the others rendered as committed (nbval has run them all
already); the build fails on a Sphinx warning and on a local link that leads nowhere.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

if sys.version_info < (3, 11):  # pyproject's docs extra installs nothing there (MyST-Parser 5.2)
    pytest.skip("the documentation site needs Python 3.11 or newer", allow_module_level=True)
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
def test_the_site_builds_with_no_broken_link_and_its_lessons_right(site):
    _, problems = site
    assert problems == []


@pytest.mark.slow
def test_each_page_is_in_the_site_and_shows_its_outputs(site):
    out, _ = site
    docs = [p.relative_to(ROOT).with_suffix(".html") for p in (ROOT / "docs").rglob("*.md")
            if "site" not in p.parts and p.name != "index.md"]
    notebooks = [Path("notebooks") / f"{p.stem}.html" for p in (ROOT / "notebooks").glob("*.ipynb")]
    missing = [str(p) for p in [*docs, *notebooks, Path("notebooks/README.html"),
                                Path("index.html"), Path("search.html"), Path("searchindex.js")]
               if not (out / p).is_file()]
    assert not missing
    pages = {p.stem: p.read_text(encoding="utf-8") for p in (out / "notebooks").glob("0*.html")}
    # The streamed reply is one output: its pieces were joined, no markup between them.
    assert build_docs.CHATS[0]["reply"] in pages["03_openvino"]
    assert "application/vnd.jupyter.widget-state+json" in pages["05_chat"]  # the chat renders
    assert "application/vnd.jupyter.widget-state+json" not in pages["06_build_with_it"]  # not run
    assert "Two environments" in (out / "docs" / "install.html").read_text(encoding="utf-8")


def test_a_link_to_nothing_is_found(tmp_path):
    """The offline link check finds a missing page and a missing anchor, not a present one."""
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><a href="b.html#top">b</a>'
                                     '<a href="b.html#gone">gone</a><a href="c.html">c</a>'
                                     '<a href="#top">here</a><a href="https://x.org/y">web</a>')
    (tmp_path / "b.html").write_text('<section id="top"><a href="a.html">a</a></section>')
    assert build_docs.broken_links(tmp_path) == ["a.html: b.html#gone: no such anchor",
                                                 "a.html: c.html: no such file"]


def test_links_to_repository_files_lead_to_them():
    """A page's link to a site page stays; one to another repository file leads to it in the
    repository; one to a file that is not there is a problem."""
    problems = []
    page = ROOT / "docs" / "benchmark.md"
    text = ("[a](install.md#x) [b](../data/quality_text.txt) [c](../examples/) [d](gone.md) "
            "[e](https://x.org) [f](#here)")
    staged = {ROOT / "docs" / "install.md"}
    assert build_docs.rebase_links(text, page, staged, problems) == (
        f"[a](install.md#x) [b]({build_docs.REPO_URL}/blob/HEAD/data/quality_text.txt) "
        f"[c]({build_docs.REPO_URL}/tree/HEAD/examples) [d](gone.md) [e](https://x.org) [f](#here)")
    assert problems == ["docs/benchmark.md: link to gone.md: no such file"]


def test_a_page_in_no_table_of_contents_or_a_missing_one_fails(tmp_path):
    """Sphinx runs with -W: an entry with no page, and a page that no table of contents lists,
    fail the build."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.md").write_text("# Home\n\n```{toctree}\nmissing\n```\n")
    (src / "orphan.md").write_text("# Orphan\n")
    problems = " ".join(build_docs.sphinx(src, tmp_path / "out"))
    assert "nonexisting document 'missing'" in problems
    assert "document isn't included in any toctree" in problems


def test_only_the_files_git_tracks_go_in_the_site(tmp_path):
    """A learner's own files in notebooks/ stay out of the site: only what git tracks goes in;
    without git, notebooks, pages and images (not a learner's data or hidden folders)."""
    import subprocess

    for name in ("01_x.ipynb", "diagram.svg", "Untitled.ipynb", "my_notes.txt",
                 ".ipynb_checkpoints/01_x-checkpoint.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")

    def names():
        return [p.relative_to(tmp_path).as_posix() for p in build_docs.suite_files(tmp_path)]

    assert names() == ["01_x.ipynb", "Untitled.ipynb", "diagram.svg"]  # not a clone: suffixes
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "01_x.ipynb", "diagram.svg"], cwd=tmp_path, check=True)
    assert names() == ["01_x.ipynb", "diagram.svg"]


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
