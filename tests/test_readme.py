"""What the documentation names exists: CLI commands and their options, notebooks, make targets.

Commands are read from code (`inline` spans and fenced blocks) in the README, the pages of
docs/ (the site `make docs` builds), the copy-paste reference and the workshop guide, and checked
against `phi3_aipc.cli.parser()`, the files in
notebooks/ and the Makefile.
"""
import argparse
import re
from pathlib import Path

import pytest

from phi3_aipc.cli import parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "notebooks/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")
                if "site" not in p.relative_to(ROOT / "docs").parts)]
# The pages that must name notebooks (the others may, and what they name must exist).
NAME_NOTEBOOKS = ["README.md", "notebooks/README.md", "docs/WORKSHOP.md"]


def code_of(doc: str) -> list[str]:
    """The text of every fenced code block and inline code span in a Markdown file."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    fence = r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```"  # also indented, in a list
    blocks = re.findall(fence, text, re.DOTALL | re.MULTILINE)
    prose = re.sub(fence, "", text, flags=re.DOTALL | re.MULTILINE)
    # A line of a block is one command; a backslash at a line's end continues it.
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]  # may wrap
    return lines + spans


def subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def cli_mentions(doc: str) -> list[tuple[list[str], list[str]]]:
    """Each `phi3-aipc ...` in code: its command words and the --options given with them."""
    mentions = []
    for code in code_of(doc):
        for found in re.finditer(r"(?:^|[\s$>(])phi3-aipc((?:\s+[a-z][a-z-]*)+)?(.*)", code):
            words = (found[1] or "").split()
            options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", found[2] or "")
            mentions.append((words, options))
    return mentions


@pytest.mark.parametrize("doc", DOCS)
def test_every_cli_command_and_option_named_exists(doc):
    mentions = cli_mentions(doc)
    for words, options in mentions:
        command, known = parser(), []
        for word in words:  # descend through sub-commands while there are any
            choices = subcommands(command)
            if not choices:
                break
            assert word in choices, f"{doc}: `phi3-aipc {' '.join(words)}`: no command {word!r}"
            command = choices[word]
            known.append(word)
        assert not (words and subcommands(command)), \
            f"{doc}: `phi3-aipc {' '.join(words)}` needs one of {sorted(subcommands(command))}"
        given = {s for a in command._actions for s in a.option_strings}
        unknown = [o for o in options if o not in given]
        assert not unknown, f"{doc}: `phi3-aipc {' '.join(known)}` has no {', '.join(unknown)}"


def test_the_docs_name_cli_commands():
    """The check above finds what it looks for (the README and the CLI reference document it)."""
    assert "docs/cli.md" in DOCS and "docs/routes/openvino.md" in DOCS
    named = {words[0] for words, _ in cli_mentions("docs/cli.md") if words}
    assert {"doctor", "models", "prepare", "generate", "bench", "quality", "demo"} <= named
    assert {"doctor", "generate", "cache"} <= {w[0] for w, _ in cli_mentions("README.md") if w}


def test_the_readme_is_read_in_five_minutes():
    """At most 200 lines (#35): the rest lives in docs/, one page per subject."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move a section to docs/"


@pytest.mark.parametrize("doc", DOCS)
def test_every_notebook_named_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"\b(\d\d_\w+\.ipynb)\b", text))
    assert named or doc not in NAME_NOTEBOOKS, f"{doc} names no notebook"
    missing = sorted(n for n in named if not (ROOT / "notebooks" / n).is_file())
    assert not missing, f"{doc} names notebooks that do not exist: {missing}"


def unknown_targets(code: str) -> list[str]:
    """`make X` and `bootstrap.py X` lines in `code` naming what the Makefile or bootstrap.py
    lacks. Names run to the next space: `make budget-fulll` is `budget-fulll`, not `budget`."""
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    bootstrap = (ROOT / "scripts" / "bootstrap.py").read_text()
    tasks = set(re.findall(r'^\s+"([a-z][a-z-]*)": ', bootstrap, re.MULTILINE))
    wrong = [f"`make {t}` is not in the Makefile"
             for t in re.findall(r"(?:^|\s)make ([a-z][\w-]*)", code) if t not in targets]
    return wrong + [f"`bootstrap.py {t}` is not one of {sorted(tasks)}"
                    for t in re.findall(r"bootstrap\.py ([a-z][\w-]*)", code) if t not in tasks]


@pytest.mark.parametrize("doc", DOCS)
def test_every_make_target_and_bootstrap_task_named_exists(doc):
    for code in code_of(doc):
        assert not unknown_targets(code), f"{doc}: {unknown_targets(code)}"


def test_a_misspelt_target_with_a_dash_is_caught():
    assert unknown_targets("make budget-full && make test-quick") == []
    assert unknown_targets("make budget-fulll") == ["`make budget-fulll` is not in the Makefile"]
    assert unknown_targets("py scripts\\bootstrap.py test-quik") != []


@pytest.mark.parametrize("doc", DOCS)
def test_every_pinned_version_named_is_the_setups(doc):
    """A `package==version` in the docs is one that pyproject.toml or the setup installs."""
    pins = (ROOT / "pyproject.toml").read_text() + (ROOT / "scripts" / "bootstrap.py").read_text()
    for code in code_of(doc):
        for pin in re.findall(r"[A-Za-z][\w.-]*==[0-9][\w.]*", code):
            assert re.search(f'"{re.escape(pin)}[";]', pins), \
                f"{doc}: {pin} is not what pyproject.toml or the setup pins"


def test_the_docs_state_the_defaults_the_code_has():
    """Default settings live once, in the route's file; the docs must say the same."""
    from phi3_aipc.routes.onnxruntime_genai import DEFAULT_BLOCK_SIZE
    from phi3_aipc.routes.openvino import PRESETS

    openvino = " ".join((ROOT / "docs/routes/openvino.md").read_text(encoding="utf-8").split())
    ort = " ".join((ROOT / "docs/routes/onnxruntime-genai.md").read_text(encoding="utf-8").split())
    reference = " ".join((ROOT / "notebooks/README.md").read_text(encoding="utf-8").split())
    for name, p in PRESETS.items():
        flags = f"--sym --group-size {p['group_size']} --ratio {p['ratio']}"
        assert re.search(rf"`--preset {name}` \|[^|]*{re.escape(flags)}", openvino), name
    default = PRESETS["default"]
    assert (f"--weight-format int4 --sym --group-size {default['group_size']} "
            f"--ratio {default['ratio']}") in reference
    stated = re.search(r"`--block-size` \(default (\d+) for the CPU.*?; (\d+), the builder's "
                       r"own, for DirectML\)", ort)
    assert stated and (int(stated[1]), int(stated[2])) == (DEFAULT_BLOCK_SIZE["cpu"],
                                                           DEFAULT_BLOCK_SIZE["dml"])
    # The option names the installed builder reads (0.18 silently ignores the old int4_ ones),
    # in the reference and in notebook 02's typed command and its build cell.
    from phi3_aipc.routes.onnxruntime_genai import builder_option_names

    block, level = builder_option_names()
    typed = f"--extra_options {block}={DEFAULT_BLOCK_SIZE['cpu']} {level}=4"
    notebook = (ROOT / "notebooks/02_directml_onnxruntime_genai.ipynb").read_text(encoding="utf-8")
    assert typed in reference
    assert notebook.count(typed) == 2, "notebook 02: the markdown command and the build cell"

