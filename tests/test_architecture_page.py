"""docs/architecture.md describes the package as it is: every file it names exists, every module
of phi3_aipc is named, and its table of floors is test_architecture's LAYERS."""
import re
from pathlib import Path

from .test_architecture import LAYERS

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
TOP = r"(?:phi3_aipc|tests|scripts|docs|data|notebooks|examples|binder)"


def named_paths(text: str) -> set[str]:
    """Repository paths in `code` spans and link targets; templates (`routes/<name>.py`) aside."""
    spans = re.findall(rf"`({TOP}/[^`\s]*|pyproject\.toml)`", text)
    links = [str((PAGE.parent / t).resolve().relative_to(ROOT))
             for t in re.findall(r"\]\((\.\./[^)#\s]+)\)", text)]
    return {p.rstrip("/") for p in spans + links if "<" not in p}


def floors(text: str) -> list[set[str]]:
    """The modules of each row of the floor table ("| 0: ..."), as LAYERS names them."""
    rows = re.findall(r"^\| (\d+): [^|]*\| ([^|]*)\|", text, re.MULTILINE)
    return [{"" if m == "__init__.py" else m.removesuffix(".py").rstrip("/")
             for m in re.findall(r"`phi3_aipc/([\w.]+/?)`", modules)} for _, modules in rows]


def test_every_file_the_page_names_exists():
    named = named_paths(PAGE.read_text(encoding="utf-8"))
    assert len(named) > 40, "the page names the package's files"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_module_of_the_package_is_named():
    named = named_paths(PAGE.read_text(encoding="utf-8"))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "phi3_aipc").rglob("*.py")}
    unnamed = sorted(modules - named)
    assert not unnamed, f"docs/architecture.md does not name {unnamed}"


def test_the_page_floors_are_the_tested_layers():
    assert floors(PAGE.read_text(encoding="utf-8")) == [set(names) for names in LAYERS]


def test_the_checks_can_fail():
    text = ("`phi3_aipc/gone.py`, `phi3_aipc/routes/<name>.py`, [x](../notebooks/README.md)\n"
            "| 0: a | `phi3_aipc/errors.py`, `phi3_aipc/bench/` | x |\n"
            "| 1: b | `phi3_aipc/__init__.py` | y |")
    assert named_paths(text) == {"phi3_aipc/gone.py", "notebooks/README.md",
                                 "phi3_aipc/errors.py", "phi3_aipc/bench", "phi3_aipc/__init__.py"}
    assert floors(text) == [{"errors", "bench"}, {""}]
