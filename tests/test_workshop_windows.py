r"""docs/WORKSHOP.md's Windows lines work in a fresh PowerShell: no bash `export` or `source`, no
activation script (PowerShell's default execution policy refuses it), and no permanent `setx`
of an offline switch (HF_HUB_OFFLINE, PHI3_AIPC_*), which would outlive the workshop.

Windows code is recognised as: a fenced block tagged powershell, pwsh, ps1, ps, cmd, bat or
batch; in any other block, what follows a `# Windows:` / `# PowerShell:` / `# cmd:` note, and a
line that looks like Windows (`\Scripts\`, `$env:`, `C:\`, `%NAME%`); an inline span that looks
like Windows or follows "Windows:" / "PowerShell:" in the prose. `setx` and
SetEnvironmentVariable exist only on Windows, so they are checked in all code. Every fenced
block must name its language, so that none passes for Linux by mistake.
"""
import importlib.util
import re
from pathlib import Path

import pytest

from phi3_aipc.cli import parser

from .test_readme import subcommands

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "WORKSHOP.md"
FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
WINDOWS_LANGUAGES = {"powershell", "pwsh", "ps1", "ps", "cmd", "bat", "batch"}
LOOKS_WINDOWS = re.compile(r"\\Scripts\\|\$env:|\b[A-Za-z]:\\|%\w+%")
NOTE = re.compile(r"#\s*(?:Windows|PowerShell|cmd)\b[^:\n]{0,30}:(.*)", re.IGNORECASE)
SAID_WINDOWS = re.compile(r"\b(?:Windows|PowerShell|cmd)\b[^`.;\n]{0,30}:\s*$", re.IGNORECASE)
SWITCH = r"[\"']?(?:HF_HUB_OFFLINE|TRANSFORMERS_OFFLINE|PHI3_AIPC_(?:MODEL|PREBUILT))\b"
ANYWHERE = [  # Windows-only commands: wrong wherever they are
    (re.compile(rf"\bsetx\s+(?:/\w+\s+)*{SWITCH}", re.IGNORECASE),
     "`setx` makes an offline switch permanent; use $env:NAME = \"value\""),
    (re.compile(rf"SetEnvironmentVariable\(\s*{SWITCH}[^)]*(?:User|Machine)", re.IGNORECASE),
     "SetEnvironmentVariable(..., User/Machine) makes an offline switch permanent"),
]
IN_WINDOWS = ANYWHERE + [
    (re.compile(r"(?:^|[\s;&|(])export\s+\w+"), "`export` is bash; use $env:NAME = \"value\""),
    (re.compile(r"(?:^|[\s;&|(])source\s"), "`source` is bash"),
    (re.compile(r"(?<![A-Za-z])activate", re.IGNORECASE),
     "the activation script is refused by PowerShell's default execution policy; call "
     ".venv\\Scripts\\python -m ... or .venv\\Scripts\\phi3-aipc"),
]


def code_of(text: str) -> tuple[list[str], list[str], list[str]]:
    """(Windows code, other code, fences without a language) of a Markdown text."""
    windows, other, untagged = [], [], []
    for match in FENCE.finditer(text):
        language, body = match[1].strip().lower(), match[2]
        if not language:
            untagged.append(body.strip().splitlines()[0] if body.strip() else "(empty)")
        for line in body.splitlines():
            note = NOTE.search(line)
            if language in WINDOWS_LANGUAGES:
                windows.append(line)
            elif note:  # Linux, then its Windows equivalent in a comment
                other.append(line[:note.start()])
                windows.append(note[1])
            else:
                (windows if LOOKS_WINDOWS.search(line) else other).append(line)
    prose = FENCE.sub("", text)
    for match in re.finditer(r"`([^`]+)`", prose):
        span = " ".join(match[1].split())
        is_windows = LOOKS_WINDOWS.search(span) or SAID_WINDOWS.search(prose[:match.start()][-60:])
        (windows if is_windows else other).append(span)
    return windows, other, untagged


def problems(text: str) -> list[str]:
    """What in a guide's Windows code would not work as written, or would outlive the day."""
    windows, other, untagged = code_of(text)
    found = [f"{line!r}: {why}" for line in windows for rule, why in IN_WINDOWS
             if rule.search(line)]
    found += [f"{line!r}: {why}" for line in other for rule, why in ANYWHERE if rule.search(line)]
    return found + [f"a fenced block names no language (starting {first!r})"
                    for first in untagged]


TEXT = GUIDE.read_text(encoding="utf-8")


def test_the_guides_windows_lines_work_in_powershell():
    assert problems(TEXT) == []


def test_the_guide_gives_the_powershell_way():
    """The check above is not vacuous: the guide has its Windows lines, as PowerShell wants."""
    windows = "\n".join(code_of(TEXT)[0])
    for line in ('$env:HF_HUB_OFFLINE = "1"', "$env:PHI3_AIPC_CACHE = ", '$env:HF_HOME = "C:\\hf"',
                 ".venv\\Scripts\\python -m jupyter", ".venv\\Scripts\\phi3-aipc generate"):
        assert line in windows, line
    prose = " ".join(FENCE.sub("", TEXT).split())
    assert "exFAT or NTFS" in prose and "FAT32 cannot hold a file of 4 GB or more" in prose
    assert "4.97 GB" in prose


def test_the_windows_lines_name_what_exists():
    """`.venv\\Scripts\\phi3-aipc ...` commands and options are the CLI's (tests/test_readme.py
    checks the bare `phi3-aipc` ones), and `python -m` modules are installed."""
    named = 0
    for line in code_of(TEXT)[0]:
        for found in re.finditer(r"\\Scripts\\phi3-aipc(?:\.exe)?((?:\s+[a-z][a-z-]*)+)?(.*)",
                                 line):
            command, words = parser(), (found[1] or "").split()
            for word in words:
                choices = subcommands(command)
                if not choices:
                    break
                assert word in choices, f"{line!r}: no command {word!r}"
                command = choices[word]
            assert not (words and subcommands(command)), f"{line!r} needs a sub-command"
            given = {s for a in command._actions for s in a.option_strings}
            unknown = [o for o in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", found[2])
                       if o not in given]
            assert not unknown, f"{line!r}: no option {unknown}"
            named += 1
        for module in re.findall(r"\\Scripts\\python(?:\.exe)?\s+-m\s+([A-Za-z_][\w.]*)", line):
            assert importlib.util.find_spec(module), f"{line!r}: no module {module}"
    assert named >= 5


OLD_LINES = (  # as the guide had them (its `# PowerShell: $env:...` note was right)
    "```bash\nexport PHI3_AIPC_CACHE=/path/to/workshop-cache       # Windows: setx "
    "PHI3_AIPC_CACHE C:\\path\\to\\workshop-cache\nexport HF_HUB_OFFLINE=1        "
    "                      # Windows: setx HF_HUB_OFFLINE 1 (then open a new terminal)\n```\n",
    "below run in the suite's environment: activate `.venv` first (Windows:\n"
    "`.venv\\Scripts\\activate`; Linux: `source .venv/bin/activate`).\n",
)
PLANTED = OLD_LINES + (
    "```powershell\nexport HF_HUB_OFFLINE=1\n```\n",
    "```pwsh\n.venv\\Scripts\\Activate.ps1\n```\n",
    "   ```powershell\n   source .venv/Scripts/activate\n   ```\n",  # indented, in a list
    "```cmd\nsetx HF_HUB_OFFLINE 1\n```\n",
    "```powershell\nsetx /M PHI3_AIPC_PREBUILT yes\n```\n",
    "```powershell\n[Environment]::SetEnvironmentVariable(\"HF_HUB_OFFLINE\", \"1\", "
    "\"User\")\n```\n",
    "```bash\nsource .venv/bin/activate   # PowerShell: .venv\\Scripts\\activate\n```\n",
    "```bash\n.venv\\Scripts\\activate\n```\n",  # a Windows line in a bash block
    "In PowerShell: `export HF_HUB_OFFLINE=1`.\n",
    "```\n$env:HF_HUB_OFFLINE = \"1\"\n```\n",  # no language
)


@pytest.mark.parametrize("bad", PLANTED)
def test_a_planted_bad_line_is_caught(bad):
    assert problems(TEXT + "\n" + bad), bad


@pytest.mark.parametrize("good", [
    "```bash\nsource .venv/bin/activate\nexport HF_HUB_OFFLINE=1\n```\n",
    "```powershell\nsetx HF_HOME C:\\hf\n$env:HF_HUB_OFFLINE = \"1\"\n```\n",
    "On Linux: `source .venv/bin/activate`, then `export HF_HUB_OFFLINE=1`.\n",
])
def test_linux_lines_and_session_variables_pass(good):
    assert problems(TEXT + "\n" + good) == []
