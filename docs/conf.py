"""Sphinx settings for the phi3-aipc site (`make docs`; scripts/build_docs.py stages the sources).

Sphinx with MyST-NB: the prose pages are Markdown (MyST), the notebooks are rendered from the
copies build_docs.py has already executed (nb_execution_mode "off"), with their outputs and
their saved widget state; Sphinx's own search index works offline. See docs/site.md for why.
"""
from docutils import nodes
from docutils.transforms import Transform

project = "phi3-aipc"
author = "phi3-aipc"
html_title = "phi3-aipc"
root_doc = "index"  # the README, then docs/index.md's table of contents (build_docs.py)
extensions = ["myst_nb"]
nb_execution_mode = "off"  # build_docs.py runs the notebooks itself (nbclient) and checks them
nb_merge_streams = True  # a streamed reply is one output, not one per piece
myst_heading_anchors = 4  # GitHub's heading anchors, so links work on GitHub and in the site
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["docs/index.md", "docs/site/**", "**/.ipynb_checkpoints"]
html_theme = "furo"
html_static_path: list[str] = []
suppress_warnings: list[str] = []  # none: the build runs with -W, a warning fails it


class JupyterAnchors(Transform):
    """Give each notebook heading also the id JupyterLab gives it ("1. Install" -> "1.-Install"),
    so the notebooks' own tables of contents link in the site as they do in JupyterLab. Runs
    before MyST resolves `#...` links (ResolveAnchorIds, priority 879)."""

    default_priority = 750

    def apply(self) -> None:
        if not self.document.get("source", "").endswith(".ipynb"):
            return
        for section in self.document.findall(nodes.section):
            anchor = section[0].astext().replace("\u2019", "'").replace(" ", "-")
            if anchor not in self.document.ids:
                section["ids"].append(anchor)
                self.document.ids[anchor] = section


def setup(app):
    app.add_transform(JupyterAnchors)
