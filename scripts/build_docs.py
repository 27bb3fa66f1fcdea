"""`make docs`: the documentation site: the README, the pages of docs/ and every notebook run on
the offline stand-in, built by Sphinx (MyST-NB) into static HTML with navigation and search.

    python scripts/build_docs.py [--out docs/site] [--execute-none] [NAME ...]

The committed notebooks carry no outputs; this executes each one (nbclient, with the widgets'
state saved so the pickers and the chat render) and checks the cells that teach, tagged in the
notebook's metadata (`check:reply-N`, `check:second-turn`, ...): a lesson that prints the wrong
text fails the build with the cell and what was expected. NAME ... executes only those
notebooks and renders the others as committed (no outputs); `--execute-none` executes none
(the prose and the links in 6-12 s). Only the files of notebooks/ that git tracks go in the
site (a learner's own notebooks and files there stay out; without git, notebooks and images).
The build fails on any Sphinx warning (a missing page, a page in no table of contents, a link
to a heading that is not there) and on a link in the built HTML, or in the Markdown to a
repository file, that leads nowhere: checked offline.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DOCS = ROOT / "docs"
# Where a link to a repository file that is not part of the site leads (placeholder until the
# project is published, as the README's Binder badge: replace phi3-aipc/phi3-aipc there too).
REPO_URL = "https://github.com/phi3-aipc/phi3-aipc"
IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lesson_checks import CHATS, check, text_of  # noqa: E402,F401  (beside this script; tests use them)


def coalesce(nb) -> None:
    """One output per run of streamed pieces (a reply streams as many small writes)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.get("outputs", []):
            if (merged and out.output_type == "stream" and merged[-1].output_type == "stream"
                    and merged[-1].name == out.name):
                merged[-1].text += out.text
            else:
                merged.append(out)
        cell["outputs"] = merged


def suite_files(folder: Path = NOTEBOOKS) -> list[Path]:
    """The files of `folder` that are the suite's: those git tracks, so that a learner's own
    notebooks and files there stay out of the site; without git (an unpacked archive), the
    notebooks, Markdown pages and images."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=folder, capture_output=True,
                                text=True, check=True).stdout.split("\0")
        files = [folder / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # no git, or not a clone
        files = []
    if not files:  # nor in a repository that does not track these files
        files = [p for p in folder.rglob("*") if p.suffix in (".ipynb", ".md", *IMAGES)
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(p for p in files if p.is_file())


def notebooks() -> list[Path]:
    """The suite's notebooks, as the site lists them."""
    return [p for p in suite_files() if p.suffix == ".ipynb" and p.parent == NOTEBOOKS]


def execute(path: Path, routes: list[str], timeout: int):
    """The notebook run on the stand-in, with its widgets' state; the lesson checks' problems."""
    import nbformat
    from nbclient import NotebookClient

    print(f"running {path.name} ...", flush=True)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS)}},
                   store_widget_state=True).execute()
    coalesce(nb)
    return nb, check(path.stem, nb, routes)


LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def rebase_links(text: str, source: Path, staged: set[Path], problems: list[str]) -> str:
    """Markdown links of `source` (a repository file) as the site needs them: a link to a page
    or notebook of the site stays; one to another repository file leads to it on GitHub; one to
    nothing is a problem."""
    def rebase(match: re.Match) -> str:
        target = match[2]
        if re.match(r"[a-z][a-z+.-]*:", target) or target.startswith("#"):
            return match[0]
        path = unquote(target.split("#")[0])
        resolved = (source.parent / path).resolve()
        if resolved in staged:
            return match[0]
        if not resolved.exists() or ROOT not in resolved.parents:
            problems.append(f"{source.relative_to(ROOT)}: link to {target}: no such file")
            return match[0]
        kind = "tree" if resolved.is_dir() else "blob"
        return f"{match[1]}{REPO_URL}/{kind}/HEAD/{resolved.relative_to(ROOT).as_posix()}{match[3]}"
    return LINK.sub(rebase, text)


def stage(src: Path, executed: dict, problems: list[str]) -> None:
    """The site's sources in `src`, laid out as the repository: index.md (the README and
    docs/index.md's tables of contents), docs/, notebooks/ (executed where run)."""
    import nbformat

    pages = [p for p in DOCS.rglob("*.md") if "site" not in p.relative_to(DOCS).parts]
    pages.append(NOTEBOOKS / "README.md")
    staged_notebooks = notebooks()
    staged = {p.resolve() for p in pages + staged_notebooks} | {ROOT / "README.md"}
    assets = [p for p in suite_files() if p.suffix not in (".ipynb", ".md")]
    staged |= {p.resolve() for p in assets}
    for path in pages:
        text = rebase_links(path.read_text(encoding="utf-8"), path, staged, problems)
        (src / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        (src / path.relative_to(ROOT)).write_text(text, encoding="utf-8")
    for path in assets:
        (src / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, src / path.relative_to(ROOT))
    readme = rebase_links((ROOT / "README.md").read_text(encoding="utf-8"), ROOT / "README.md",
                          staged, problems)
    toc = (DOCS / "index.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(f"{readme}\n{toc}", encoding="utf-8")
    for path in staged_notebooks:
        nb = executed.get(path.stem) or nbformat.read(path, as_version=4)
        # IPython's lexer, as a kernel would say: a `!` line is highlighted, not an error.
        nb.metadata.setdefault("language_info", {"name": "python"})
        nb.metadata.language_info.setdefault("pygments_lexer", "ipython3")
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = rebase_links(cell.source, path, staged, problems)
        nbformat.write(nb, src / "notebooks" / path.name)


class Links(HTMLParser):
    """The ids a page defines and the local links it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(v for k, v in attrs.items() if k in ("id", "name") and v)
        for key in ("href", "src"):
            value = attrs.get(key)
            if value and not re.match(r"[a-z][a-z+.-]*:|//", value):  # not elsewhere
                self.links.append(value)


def broken_links(site: Path) -> list[str]:
    """Every local link of every built page leads to a file that is there, and to an id that is
    on it (offline: Sphinx's linkcheck goes online)."""
    pages = {}
    for page in site.rglob("*.html"):
        parsed = Links()
        parsed.feed(page.read_text(encoding="utf-8"))
        pages[page.resolve()] = parsed
    problems = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site.resolve())}: {link}"
            if not target.is_file():
                problems.append(f"{where}: no such file")
            elif parts.fragment and target in pages and unquote(parts.fragment) not in \
                    pages[target].ids:
                problems.append(f"{where}: no such anchor")
    return problems


def sphinx(src: Path, out_dir: Path) -> list[str]:
    """Sphinx's HTML build of `src` into `out_dir` (made anew), with docs/conf.py; its warnings
    (a missing page, a page in no table of contents, a heading link to nothing) as problems."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    run = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
                          "-c", str(DOCS), "-d", str(src / ".doctrees"), str(src), str(out_dir)],
                         capture_output=True, text=True)
    problems = [f"sphinx: {line}" for line in run.stderr.splitlines()
                if "WARNING" in line or "ERROR" in line]
    if run.returncode and not problems:
        problems.append(f"sphinx exited with {run.returncode}: {run.stderr[-2000:]}")
    return problems


def build(out_dir: Path, names: list[str] | None = None, timeout: int = 900) -> list[str]:
    """Execute the notebooks `names` (all when None), check their lessons, build the site into
    `out_dir`; return the problems found (lessons, Sphinx warnings, links)."""
    from phi3_aipc import installed_routes

    env_bin = str(Path(sys.executable).parent)  # optimum-cli, as in an activated environment
    if env_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([env_bin, os.environ.get("PATH", "")])
    os.environ.setdefault("PHI3_AIPC_MODEL", "stand-in")
    routes = [r.name for r in installed_routes()]
    problems, executed = [], {}
    for path in notebooks():
        if names is None or path.stem in names or path.name in names:
            executed[path.stem], found = execute(path, routes, timeout)
            problems += found
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-docs-") as tmp:
        src = Path(tmp)
        stage(src, executed, problems)
        problems += sphinx(src, out_dir)
    if out_dir.is_dir():
        problems += broken_links(out_dir)
    return problems


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--out", default=str(DOCS / "site"))
    args.add_argument("--execute-none", action="store_true",
                      help="render every notebook as committed, without running it")
    args.add_argument("names", nargs="*", help="run only these notebooks (e.g. 03_openvino)")
    opts = args.parse_args()
    names = [] if opts.execute_none else (opts.names or None)
    problems = build(Path(opts.out), names)
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    print(f"site: {Path(opts.out) / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
