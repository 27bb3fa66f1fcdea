"""`make docs`: run every notebook on the offline stand-in and render it to a static HTML site.

    python scripts/build_docs.py [--out docs/site] [NAME ...]

The committed notebooks carry no outputs; this executes each one (nbclient, with the widgets'
state saved so the pickers and the chat render), joins the pieces a streamed reply was printed
in, renders it with nbconvert and writes an index page. It also checks the cells that teach,
tagged in the notebook's metadata (`check:reply-N`, `check:second-turn`, ...): a lesson that
prints the wrong text fails the build with the cell and what was expected.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lesson_checks import CHATS, check  # noqa: E402,F401  (beside this script; tests read CHATS here)


def coalesce(nb) -> None:
    """One output per run of streamed pieces (a reply streams as many small writes)."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if (merged and out.output_type == "stream" and merged[-1].output_type == "stream"
                    and merged[-1].name == out.name):
                merged[-1].text += out.text
            else:
                merged.append(out)
        cell["outputs"] = merged


def build(out_dir: Path, names: list[str] | None = None, timeout: int = 900) -> list[str]:
    """Execute and render the notebooks into `out_dir`; return the problems the checks found."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from phi3_aipc import installed_routes

    env_bin = str(Path(sys.executable).parent)  # optimum-cli, as in an activated environment
    if env_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([env_bin, os.environ.get("PATH", "")])
    os.environ.setdefault("PHI3_AIPC_MODEL", "stand-in")
    routes = [r.name for r in installed_routes()]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if names:
        paths = [p for p in paths if p.stem in names or p.name in names]
    problems, pages = [], []
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS)}},
                       store_widget_state=True).execute()
        coalesce(nb)
        problems += check(path.stem, nb, routes)
        body, _ = HTMLExporter().from_notebook_node(nb)
        page = out_dir / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
    items = "\n".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in pages)
    (out_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>phi3-aipc notebooks</title>"
        "<h1>phi3-aipc notebooks</h1><p>Run on the offline stand-in (its replies are canned "
        f"sentences, not Phi-3's).</p><ul>{items}</ul>\n", encoding="utf-8")
    return problems


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--out", default=str(ROOT / "docs" / "site"))
    args.add_argument("names", nargs="*", help="only these notebooks (e.g. 03_openvino)")
    opts = args.parse_args()
    problems = build(Path(opts.out), opts.names)
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    print(f"site: {Path(opts.out) / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
