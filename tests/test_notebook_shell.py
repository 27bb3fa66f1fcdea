"""Every notebook's `!` and `%` lines work on Windows too, and in whatever kernel an editor picks.

Jupyter runs a `!` line through cmd.exe on Windows, and a console script called by its bare name
(`optimum-cli`, `hf`, `pip`) is found only when the kernel's `Scripts` folder is on PATH, which
an editor's kernel picker does not arrange. So a line calls tools through the kernel's own Python
(`"{sys.executable}" -m ...`) or another interpreter held in a variable (`"{main}"`), and uses no
syntax that only bash reads: `&&` chains, `export`, `source`, backslash continuations, single
quotes (cmd.exe passes them on as characters) or unquoted paths (a space in a user's folder
splits them).
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# A shell line: `!cmd`, `x = !cmd`, or a cell magic whose body is a shell (`%%bash`, `%%sh`).
SHELL = re.compile(r"^\s*(?:\w+\s*=\s*)?!(.*)$")
# The program a shell line may start with: an interpreter held in a variable, quoted.
PROGRAM = re.compile(r'^\s*"\{[\w.]+\}"')
# Expressions that hold a path (a folder, a file, a Path's division).
PATHLIKE = re.compile(r"\{[^}]*(?:path|dir|folder|file|source|partial|/)[^}]*\}")
# Magics whose bodies are shell scripts (bash only): not portable at all.
SHELL_MAGICS = ("%%bash", "%%sh", "%%script bash", "%%script sh", "%sx", "%%sx")


def problems(source: str) -> list[str]:
    """What is wrong with a code cell's shell and magic lines, one reason each."""
    found = []
    lines = source.splitlines()
    if lines and lines[0].strip().startswith(SHELL_MAGICS):
        found.append(f"a bash cell ({lines[0].strip()}): cmd.exe cannot run it")
    for line in lines:
        shell = SHELL.match(line)
        if shell is None:
            continue
        command = shell[1]
        if not PROGRAM.match(command):
            name = command.split()[0] if command.split() else "(nothing)"
            found.append(f"calls {name} by bare name: use \"{{sys.executable}}\" -m ...")
        if re.search(r"&&|\|\||^\s*(export|source)\s|\\$", command):
            found.append(f"bash-only syntax (&&, ||, export, source or \\ at the end): {command}")
        # What cmd.exe itself reads: outside double quotes and outside IPython's {expressions}.
        bare = re.sub(r"\{[^}]*\}", "{}", re.sub(r'"[^"]*"', "", command))
        if "'" in bare:
            found.append(f"single quotes, which cmd.exe passes on as characters: {command}")
        unquoted = [m[0] for m in PATHLIKE.finditer(re.sub(r'"[^"]*"', "", command))]
        if unquoted:
            found.append(f"an unquoted path {unquoted[0]}: put it in double quotes")
    return found


def code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_shell_lines_run_on_windows_in_any_kernel(path):
    found = [f"{path.name}: {p}" for source in code_cells(path) for p in problems(source)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("line", [
    '!optimum-cli export openvino --model "{source.path}" "{out}"',
    'found = !hf download OpenVINO/Phi-3-mini-4k-instruct-int4-ov --local-dir "{out}"',
    '!"{sys.executable}" -m pip install x && echo done',
    '!export HF_HUB_OFFLINE=1',
    "!\"{sys.executable}\" -m pip install 'numpy<2'",
    "!\"{sys.executable}\" -c 'print(1)'",
    '!"{sys.executable}" -m optimum.commands.optimum_cli export openvino --model {source.path} x',
    '!"{sys.executable}" -m onnxruntime_genai.models.builder -i "{src}" \\',
])
def test_a_planted_bad_line_is_refused(line):
    assert problems(line), line


@pytest.mark.parametrize("line", [
    '!"{sys.executable}" -m optimum.commands.optimum_cli export openvino --model "{source.path}"'
    ' --weight-format int4 "{partial}"',
    'main = !"{sys.executable}" -c "from phi3_aipc.envs import main_python; print(main_python())"',
    '!"{sys.executable}" -m onnxruntime_genai.models.builder -i "{source.path}" -p int4 '
    '-e {provider} {extra}',
    '%pip install -q "openvino==2026.4.1"',
    'found = !"{main}" -c "print(openvino_int4(device=\'NPU\'))"',
])
def test_a_portable_line_passes(line):
    assert problems(line) == []


def test_a_bash_cell_is_refused():
    assert problems("%%bash\nls -l\n")
