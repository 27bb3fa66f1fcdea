"""The notebooks teach the libraries: the cells a learner copies use only the libraries.

Every cell that installs, quantizes (exports, builds) or generates must be the library's own
lines; `phi3_aipc` is for the plumbing around them (finding the model, a device picker, the chat).
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TEACHING = ["00_check_your_ai_pc", "01_npu_acceleration_library",
            "02_directml_onnxruntime_genai", "03_openvino", "06_build_with_it"]
TARGET = 0.6  # share of code cells that use only the libraries
# What makes a cell an install, quantize or generate step.
STEPS = re.compile(r"%pip install|optimum-cli export|onnxruntime_genai\.models\.builder|"
                   r"NPUModelForCausalLM|\.generate\(|generate_next_token|LLMPipeline\(")


def code_cells(name: str) -> list[str]:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def uses_helpers(source: str) -> bool:
    return bool(re.search(r"^\s*(from|import)\s+phi3_aipc\b", source, re.MULTILINE))


def test_most_cells_use_only_the_libraries():
    cells = [c for name in TEACHING for c in code_cells(name)]
    library = [c for c in cells if not uses_helpers(c)]
    share = len(library) / len(cells)
    assert share >= TARGET, f"{len(library)} of {len(cells)} code cells ({share:.0%}) use only " \
                            f"the libraries; the target is {TARGET:.0%}"


@pytest.mark.parametrize("name", TEACHING)
def test_install_quantize_and_generate_cells_are_the_libraries(name):
    for source in code_cells(name):
        if STEPS.search(source) and "ChatWidget" not in source:
            assert not uses_helpers(source), f"{name}: this step imports phi3_aipc:\n{source}"


@pytest.mark.parametrize("name", TEACHING + ["04_compare_backends", "05_chat"])
def test_each_notebook_has_contents_what_you_learn_and_next_steps(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "**What you will learn**" in text and "**Contents**" in text
    assert "## " in text and re.search(r"^## \d+\. Next steps", text, re.MULTILINE)
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    for link in re.findall(r"\]\(#([^)]+)\)", text):  # the table of contents links headings
        assert link in [h.replace(" ", "-") for h in headings], f"{name}: no heading for #{link}"


def test_commands_in_notebooks_paste_into_powershell():
    """Multi-line shell commands with bash's backslash continuation do not paste into
    PowerShell: commands are given on one line."""
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            assert not re.search(r"(optimum-cli|onnxruntime_genai\.models\.builder)[^\n]*\\\n",
                                 source), f"{path.name}: a command continued with a backslash"


def notebook_pins(name: str) -> list[dict]:
    """The PINS dicts of a notebook's install cell (one per platform branch)."""
    import ast

    cell = next(c for c in code_cells(name) if "%pip install" in c)
    tree = ast.parse("\n".join(line for line in cell.splitlines()
                               if not line.strip().startswith("%")))
    return [ast.literal_eval(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PINS"]


def test_the_install_cells_pin_what_the_setup_installs():
    """Notebooks 02 and 03 install (when a version differs) exactly the setup's pins: a pin moved
    in pyproject.toml and not in the notebook would make its install cell run pip every time."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((NOTEBOOKS.parent / "pyproject.toml").read_text(encoding="utf-8"))
    pinned = {}
    for line in sum(project["project"]["optional-dependencies"].values(), []):
        req = Requirement(line)
        spec = next(iter(req.specifier), None)
        if spec is not None and spec.operator == "==":
            pinned.setdefault(req.name, set()).add(spec.version)
    dicts = notebook_pins("03_openvino") + notebook_pins("02_directml_onnxruntime_genai")
    assert len(dicts) == 3  # 03's, and 02's for Windows and for elsewhere
    for pins in dicts:
        for name, version in pins.items():
            assert version in pinned.get(name, set()), f"{name}=={version} is not pyproject's"


def lesson_checks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lesson_checks",
                                                  NOTEBOOKS.parent / "scripts" / "lesson_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")))
def test_each_notebook_ends_with_a_recap_the_lesson_checks_read(name):
    """The section before Next steps is a recap of this run: one cell tagged `check:recap`
    that prints the table the check reads (nbval and `make docs` then check its figures)."""
    cells = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    tagged = [i for i, c in enumerate(cells) if "check:recap" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged check:recap"
    i = tagged[0]
    assert re.match(r"## \d+\. Recap: what ran here", "".join(cells[i - 1]["source"]))
    assert re.match(r"## \d+\. Next steps", "".join(cells[i + 1]["source"]))
    assert lesson_checks().RECAP_HEAD in "".join(cells[i]["source"])


@pytest.mark.parametrize("row, problem", [
    ("| transformers, stand-in | CPU | bf16 | 41.3 | 12 ms | 0.9 GB (now, this kernel) |", None),
    ("| transformers, stand-in | CPU | bfloat16 | nan | 12 ms | 0.9 GB |", "tokens/s is 'nan'"),
    ("| transformers, stand-in |  | bfloat16 | 41.3 | 12 ms | 0.9 GB |", "device missing"),
    ("| transformers, stand-in | CPU | bf16 | 41.3 | n/a ms | 0.9 GB |", "first token is"),
    ("| transformers, stand-in | CPU | bfloat16 | 41.3 | 12 ms |", "without six cells"),
    ("| NPU | not run: no NPU | | | | |", "no row that ran"),
])
def test_the_recap_check_fails_when_a_figure_is_missing(row, problem):
    import nbformat

    checks = lesson_checks()
    cell = nbformat.v4.new_code_cell("recap", metadata={"tags": ["check:recap"]})
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/markdown": f"{checks.RECAP_HEAD}\n|---|---|---|---|---|---|\n{row}"})]
    nb = nbformat.v4.new_notebook(cells=[cell])
    found = "; ".join(checks.check("x", nb, []))
    assert (problem in found) if problem else not found, found


# The opening's "What it needs" (#35): memory in GB and time in minutes, for a learner's 16 GB PC.
# A notebook not yet measured at full size says so instead of minutes, in so many words (none
# today: add its name and its sentence here).
NOT_MEASURED: dict[str, str] = {}


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")))
def test_each_notebook_opens_with_what_it_needs_in_gb_and_minutes(name):
    opening = "".join(json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
                      ["cells"][0]["source"])
    found = re.search(r"\*\*What it needs\*\*(.+?)(\n\n|$)", opening, re.DOTALL)
    assert found, f"{name}: the opening cell has no **What it needs** paragraph"
    needs = " ".join(found[1].split())
    assert re.search(r"\d+(\.\d+)? GB of free memory", needs.replace("**", "")), \
        f"{name}: what it needs does not say how many GB of free memory: {needs}"
    minutes = re.search(r"\*\*\d+ minutes?\*\*", needs)
    if name in NOT_MEASURED:
        assert NOT_MEASURED[name] in needs and not minutes, \
            f"{name}: either measured (then take it out of NOT_MEASURED) or it says so: {needs}"
    else:
        assert minutes and "not been measured" not in needs, \
            f"{name}: what it needs does not say how many minutes: {needs}"


def test_the_intel_figures_have_what_notebook_04_reads():
    """Notebook 04's section 10 reads the page, what it says, and each row's processor, device,
    OpenVINO version, prompt length and figures; a version is the page's or says it is not."""
    data = lesson_checks().INTEL
    assert data["page"].startswith("https://docs.openvino.ai/") and " (docs/" in data["page_says"]
    assert len(data["rows"]) == 3
    for row in data["rows"]:
        assert row["processor"].startswith("Intel Core Ultra ") and row["device"] == "built-in GPU"
        assert isinstance(row["prompt_tokens"], int) and row["prompt_tokens"] > 0
        assert row["first_token_ms"] > 0 and row["tokens_per_s"] > 0
        assert row["csv"].startswith("https://github.com/openvinotoolkit/openvino/blob/")
        assert (row["openvino"] == "not confirmed"
                or f"OpenVINO {row['openvino']}," in data["page_says"])


def intel_table(lines: list[str]) -> str:
    return "\n".join([lesson_checks().INTEL_HEAD, "|---|---|---|---|---|---|", *lines])


@pytest.mark.parametrize("change, problem", [
    (lambda rows: rows, None),
    (lambda rows: rows[:-1], "0 rows for this PC"),
    (lambda rows: rows[1:], "2 rows of Intel's"),
    (lambda rows: [*rows[:-1], rows[-1].replace("| 512.3 |", "| nan |")], "without its figures"),
    (lambda rows: [rows[0].replace(" ms |", " |"), *rows[1:]], "without its figures"),
    (lambda rows: [], "0 rows of Intel's"),
])
def test_the_intel_table_check_fails_on_a_bad_table(change, problem):
    """The lesson check `check:intel-table`: a row for each of Intel's published rows and one for
    this PC, each with its figures."""
    import nbformat

    rows = [f"| {p['processor']} (Intel's) | {p['device']} | {p['openvino']} | "
            f"{p['prompt_tokens']} | {p['first_token_ms']:.0f} ms | {p['tokens_per_s']:.1f} |"
            for p in lesson_checks().INTEL["rows"]]
    rows.append("| **this PC**: Xeon | CPU | 2026.4.1 | 32 | 4 ms | 512.3 |")
    cell = nbformat.v4.new_code_cell("table", metadata={"tags": ["check:intel-table"]})
    cell.outputs = [nbformat.v4.new_output("display_data",
                                           data={"text/markdown": intel_table(change(rows))})]
    found = "; ".join(lesson_checks().check("x", nbformat.v4.new_notebook(cells=[cell]), []))
    assert (problem in found) if problem else not found, found
