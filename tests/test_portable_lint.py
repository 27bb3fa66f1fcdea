"""The tests and scripts run on Windows too (`py -3.11 scripts\\bootstrap.py test`): no POSIX-only
way of doing things outside a branch that never runs there.

Refused, in tests/ and scripts/: `killpg` and `SIGKILL` (phi3_aipc.processes' `own_group` and
`end_tree` instead), `preexec_fn`, symbolic links (`symlink_to`, `os.symlink`: Windows needs
Developer Mode, WinError 1314; phi3_aipc.files' `link_or_copy` instead), `st_blocks`
(`allocated_bytes`, `disk_bytes`), paths under /tmp or /proc, and shell pipes (`shell=True` or
os.system with a `|`, or a `head` or `grep` child: cmd.exe has neither).

Accepted anywhere that never runs on Windows: the body of `if os.name != "nt":`, `if
sys.platform != "win32":` (or `== "linux"`, `== "darwin"`, `.startswith("linux")`...), the
`else` of `if os.name == "nt":`, what follows `if os.name == "nt": return` (or raise, continue,
break, pytest.skip(...)), either side of a conditional expression likewise, a function or class
decorated with a skipif whose condition holds on Windows (or in a module whose `pytestmark` is
one: its module-level code still runs at collection), and
a function of a module that is referred to only from such places (scripts/bootstrap.py's
build_npu_library, called in the `else` of `if os.name == "nt":`) and by no other module.
Docstrings and comments are not code. This file is not checked: its planted snippets are
strings.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("tests", "scripts")

GROUP = "POSIX-only; use phi3_aipc.processes.own_group() and end_tree()"
RULES = {
    "killpg": f"os.killpg is {GROUP}",
    "SIGKILL": f"signal.SIGKILL does not exist on Windows: it is {GROUP}",
    "preexec_fn": "preexec_fn is POSIX-only (Popen refuses it on Windows)",
    "symlink": "a symbolic link needs Developer Mode on Windows (WinError 1314): use "
               "phi3_aipc.files.link_or_copy",
    "st_blocks": "st_blocks does not exist on Windows: use phi3_aipc.files.allocated_bytes or "
                 "disk_bytes",
    "path": "a path under /tmp or /proc is POSIX-only: use tmp_path or tempfile.gettempdir() "
            "(tests/portable.py: unmakeable_folder)",
    "pipe": "a shell pipe is not portable (cmd.exe has no head or grep): read the output in "
            "Python (tests/portable.py: first_line_then_close)",
    "head/grep": "head and grep are not on Windows: read the output in Python "
                 "(tests/portable.py: first_line_then_close)",
}
HINT = ' (or put it under `if os.name != "nt":`, or in a test skipped on Windows)'
POSIX_PATH = re.compile(r"(?<![\w.~/-])/(?:tmp|proc)(?=$|[/\s'\"|;:,)])")
SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output", "system", "popen",
              "getoutput", "getstatusoutput"}
EXITS = (ast.Return, ast.Raise, ast.Continue, ast.Break)
WINDOWS_PLATFORMS = {"win32", "cygwin"}


def _dotted(node: ast.AST) -> str:
    """`os.name` for an attribute chain of names, else ""."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    if isinstance(node, ast.Call) and not node.args and not node.keywords:
        head = _dotted(node.func)
        return f"{head}()" if head else ""
    return ""


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _platform_test(subject: str, op: ast.cmpop, value: object) -> str | None:
    """"windows", "posix" or None for `subject op value` (os.name == "nt"...)."""
    if subject == "os.name":
        windows = {"nt": True, "posix": False}.get(value)
    elif subject == "sys.platform":
        if isinstance(value, (tuple, list, set, frozenset)):  # sys.platform in ("linux", ...)
            names = set(value)
            windows = True if names <= WINDOWS_PLATFORMS else (
                False if not names & WINDOWS_PLATFORMS else None)
        else:
            windows = value in WINDOWS_PLATFORMS if isinstance(value, str) else None
    elif subject == "platform.system()":
        windows = value == "Windows" if isinstance(value, str) else None
    else:
        return None
    if windows is None:
        return None
    if isinstance(op, (ast.Eq, ast.Is, ast.In)):
        return "windows" if windows else "posix"
    if isinstance(op, (ast.NotEq, ast.IsNot, ast.NotIn)) and windows:
        return "posix"  # != "nt"; but != "linux" could still be macOS or Windows
    if isinstance(op, (ast.NotEq, ast.IsNot, ast.NotIn)) and subject == "os.name":
        return "windows"  # os.name != "posix"
    return None


def platform_of(test: ast.expr, aliases: dict[str, str], negate: bool = False) -> str | None:
    """"posix" if `test` (negated) holds only off Windows, "windows" if only on it, else None."""
    flip = {"posix": "windows", "windows": "posix", None: None}
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return platform_of(test.operand, aliases, not negate)
    if isinstance(test, ast.BoolOp):
        # (a and b) holds only off Windows if either does; negated (De Morgan) if both do not
        kinds = [platform_of(v, aliases, negate) for v in test.values]
        if isinstance(test.op, ast.And) != negate:
            return next((k for k in kinds if k), None)
        return kinds[0] if len(set(kinds)) == 1 else None
    kind = None
    if isinstance(test, ast.Name):
        kind = aliases.get(test.id)
    elif isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = test.left, test.comparators[0]
        if _text(left) is not None and _dotted(right):  # "nt" == os.name
            left, right = right, left
        try:
            value = ast.literal_eval(right)
        except ValueError:
            value = None
        kind = _platform_test(_dotted(left), test.ops[0], value)
    elif isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute) and \
            test.func.attr == "startswith" and _dotted(test.func.value) == "sys.platform" \
            and test.args and isinstance(_text(test.args[0]), str):
        kind = "windows" if test.args[0].value in ("win", "win32", "cygwin") else "posix"
    return flip[kind] if negate else kind


def _skips_windows(decorator: ast.expr, aliases: dict[str, str]) -> bool:
    """A skipif (pytest, unittest) that skips on Windows, or a skipUnless that runs off it."""
    if not isinstance(decorator, ast.Call) or not isinstance(decorator.func, ast.Attribute):
        return False
    condition = decorator.args[0] if decorator.args else next(
        (k.value for k in decorator.keywords if k.arg == "condition"), None)
    if condition is None:
        return False
    name = decorator.func.attr
    if name in ("skipif", "skipIf"):
        return platform_of(condition, aliases) == "windows"
    if name == "skipUnless":
        return platform_of(condition, aliases) == "posix"
    return False


def _ends_off_windows(statement: ast.stmt, aliases: dict[str, str]) -> bool:
    """`if <on Windows>: ... return` (raise, continue, break, pytest.skip(), sys.exit()) with no
    else: what follows it in the block runs only off Windows."""
    if not isinstance(statement, ast.If) or statement.orelse or \
            platform_of(statement.test, aliases) != "windows":
        return False
    last = statement.body[-1]
    if isinstance(last, EXITS):
        return True
    return isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and \
        _dotted(last.value.func).split(".")[-1] in ("skip", "exit", "_exit")


class Checker(ast.NodeVisitor):
    """Walks a module, knowing at each node whether it runs only off Windows (`posix`)."""

    def __init__(self, aliases: dict[str, str], posix_functions: set[str],
                 local_functions: set[str], module_skipped: bool) -> None:
        self.aliases, self.posix_functions = aliases, posix_functions
        self.local_functions = local_functions
        self.module_skipped = module_skipped  # its tests' bodies: not its module-level code
        self.posix = False
        self.found: list[tuple[int, str]] = []
        self.references: dict[str, list[bool]] = {}  # a local function: each use, POSIX-only?

    def flag(self, node: ast.AST, rule: str) -> None:
        if not self.posix:
            self.found.append((node.lineno, rule))

    def under(self, posix: bool, nodes) -> None:
        saved = self.posix
        self.posix = saved or posix
        for node in nodes if isinstance(nodes, list) else [nodes]:
            self.visit(node)
        self.posix = saved

    def block(self, statements: list[ast.stmt]) -> None:
        saved = self.posix
        for statement in statements:
            if isinstance(statement, ast.Expr) and _text(statement.value) is not None:
                continue  # a docstring or a bare string: not code
            self.visit(statement)
            if _ends_off_windows(statement, self.aliases):
                self.posix = True
        self.posix = saved

    def visit_Module(self, node: ast.Module) -> None:
        self.block(node.body)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        saved = self.posix
        self.posix = saved or platform_of(node.test, self.aliases) == "posix"
        self.block(node.body)
        self.posix = saved or platform_of(node.test, self.aliases, negate=True) == "posix"
        self.block(node.orelse)
        self.posix = saved

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        self.under(platform_of(node.test, self.aliases) == "posix", node.body)
        self.under(platform_of(node.test, self.aliases, negate=True) == "posix", node.orelse)

    def visit_FunctionDef(self, node) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        skipped = self.module_skipped or any(_skips_windows(d, self.aliases)
                                             for d in node.decorator_list)
        saved = self.posix
        self.posix = saved or skipped or node.name in self.posix_functions
        self.block(node.body)
        self.posix = saved

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(child)
        skipped = self.module_skipped or any(_skips_windows(d, self.aliases)
                                             for d in node.decorator_list)
        saved = self.posix
        self.posix = saved or skipped
        self.block(node.body)
        self.posix = saved

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in ("killpg", "SIGKILL"):
            self.flag(node, node.id)
        if node.id in self.local_functions and isinstance(node.ctx, ast.Load):
            self.references.setdefault(node.id, []).append(self.posix)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in ("killpg", "SIGKILL", "st_blocks", "symlink_to"):
            self.flag(node, "symlink" if node.attr == "symlink_to" else node.attr)
        elif node.attr == "symlink" and _dotted(node.value) == "os":
            self.flag(node, "symlink")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name in ("killpg", "SIGKILL", "symlink"):
                self.flag(node, "symlink" if alias.name == "symlink" else alias.name)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and POSIX_PATH.search(node.value):
            self.flag(node, "path")

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func).split(".")[-1] if _dotted(node.func) else \
            getattr(node.func, "attr", "")
        if any(k.arg == "preexec_fn" for k in node.keywords):
            self.flag(node, "preexec_fn")
        shell = any(k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value
                    for k in node.keywords) or _dotted(node.func) in ("os.system", "os.popen")
        if shell and any("|" in s for arg in node.args for s in _strings(arg)):
            self.flag(node, "pipe")
        if name in SUBPROCESS and node.args and _program(node.args[0]) in ("head", "grep"):
            self.flag(node, "head/grep")
        self.generic_visit(node)


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if _text(n) is not None]


def _program(command: ast.expr) -> str:
    """The program a subprocess call runs, if its command says it literally."""
    if isinstance(command, (ast.List, ast.Tuple)) and command.elts:
        first = _text(command.elts[0]) or ""
    else:
        parts = _strings(command) if isinstance(command, (ast.Constant, ast.JoinedStr)) else []
        first = parts[0].split()[0] if parts and parts[0].split() else ""
    name = re.split(r"[/\\]", first)[-1].lower()
    return name.removesuffix(".exe")


def problems(source: str, path: str = "<snippet>", used_elsewhere: frozenset = frozenset()
             ) -> list[str]:
    """What in `source` would not run on Windows, as "path:line: reason" lines. A function named
    in `used_elsewhere` (imported or used as an attribute by another module) is not taken as
    POSIX-only from where its own module uses it."""
    tree = ast.parse(source)
    aliases = {}
    for statement in tree.body:  # WINDOWS = os.name == "nt"
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and \
                isinstance(statement.targets[0], ast.Name):
            kind = platform_of(statement.value, {})
            if kind:
                aliases[statement.targets[0].id] = kind
    module_skipped = False
    for statement in tree.body:  # pytestmark = pytest.mark.skipif(os.name == "nt", ...)
        if isinstance(statement, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets):
            marks = statement.value.elts if isinstance(statement.value, (ast.List, ast.Tuple)) \
                else [statement.value]
            module_skipped = module_skipped or any(_skips_windows(m, aliases) for m in marks)
    local = {s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
             } - set(used_elsewhere)
    posix_functions: set[str] = set()
    while True:  # a function used only from POSIX-only places is POSIX-only: to a fixed point
        checker = Checker(aliases, posix_functions, local, module_skipped)
        checker.visit(tree)
        more = {name for name, uses in checker.references.items() if uses and all(uses)}
        if more <= posix_functions:
            break
        posix_functions |= more
    return [f"{path}:{line}: {RULES[rule]}{HINT}" for line, rule in sorted(checker.found)]


def checked_files() -> list[Path]:
    files = [p for folder in CHECKED for p in sorted((ROOT / folder).rglob("*.py"))
             if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def tree_problems(files: list[Path]) -> list[str]:
    """`problems` of each file, knowing which names each of the others imports or uses."""
    trees = {p: p.read_text(encoding="utf-8") for p in files}
    used: dict[Path, set[str]] = {}
    for p, source in trees.items():
        names = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
        used[p] = names
    found = []
    for p, source in trees.items():
        elsewhere = frozenset(set().union(*(n for q, n in used.items() if q != p)))
        found += problems(source, str(p.relative_to(ROOT)), elsewhere)
    return found


def test_the_tests_and_scripts_are_portable():
    files = checked_files()
    assert ROOT / "scripts" / "bootstrap.py" in files and ROOT / "tests" / "portable.py" in files
    assert tree_problems(files) == []


def test_bootstraps_linux_only_build_is_accepted_for_its_guard_alone():
    """scripts/bootstrap.py links with symlink_to in build_npu_library, which it calls only in
    the `else` of `if os.name == "nt":`: one call from anywhere else and it is refused."""
    source = (ROOT / "scripts" / "bootstrap.py").read_text(encoding="utf-8")
    assert ".symlink_to(" in source and "def build_npu_library(" in source
    assert problems(source) == []
    planted = problems(source + "\n\nbuild_npu_library()\n")
    assert planted and all("symbolic link" in p for p in planted)


UNGUARDED = {
    "killpg": "os.killpg(proc.pid, 9)\n",
    "SIGKILL": "proc.send_signal(signal.SIGKILL)\n",
    "killpg imported": "from os import killpg\n",
    "preexec_fn": "subprocess.Popen(cmd, preexec_fn=os.setsid)\n",
    "symlink_to": "(folder / 'x').symlink_to(source)\n",
    "os.symlink": "os.symlink(source, target)\n",
    "st_blocks": "size = os.lstat(path).st_blocks * 512\n",
    "/tmp": "out = open('/tmp/report.csv', 'w')\n",
    "/tmp alone": "args = ['--csv', '/tmp']\n",
    "/proc": "text = Path('/proc/self/status').read_text()\n",
    "/proc in an f-string": "cache = f'/proc/{name}'\n",
    "shell pipe": "subprocess.run(f'{exe} models | head -1', shell=True)\n",
    "os.system pipe": "os.system('phi3-aipc models | sort')\n",
    "head child": "subprocess.run(['head', '-1', path])\n",
    "grep child": "subprocess.check_output(['/usr/bin/grep', 'x', path])\n",
    "grep command string": "subprocess.run('grep -c x file', shell=True)\n",
    "in a Windows branch": "if os.name == 'nt':\n    os.killpg(1, 9)\n",
    "in a skip of another reason": (
        "@pytest.mark.skipif(NPU_SKIPPED, reason='no NPU')\ndef test_x():\n    os.killpg(1, 9)\n"),
    "else of a POSIX test": "if os.name != 'nt':\n    pass\nelse:\n    os.killpg(1, 9)\n",
    "after a POSIX early return": (
        "def f():\n    if os.name != 'nt':\n        return\n    os.killpg(1, 9)\n"),
    "a helper also used unguarded": (
        "def kill(p):\n    os.killpg(p, 9)\n\nif os.name != 'nt':\n    kill(1)\nkill(2)\n"),
    "not equal to linux (macOS or Windows)": "if sys.platform != 'linux':\n    os.killpg(1, 9)\n",
    "module-level code of a skipped module": (
        "pytestmark = pytest.mark.skipif(os.name == 'nt', reason='x')\nos.killpg(1, 9)\n"),
}
GUARDED = {
    "os.name != nt": "if os.name != 'nt':\n    os.killpg(proc.pid, signal.SIGKILL)\n",
    "sys.platform != win32": "if sys.platform != 'win32':\n    os.killpg(proc.pid, 9)\n",
    "reversed comparison": "if 'nt' != os.name:\n    os.killpg(proc.pid, 9)\n",
    "os.name == posix": "if os.name == 'posix':\n    os.killpg(proc.pid, 9)\n",
    "linux only": "if sys.platform == 'linux':\n    (f / 'x').symlink_to(y)\n",
    "startswith linux": "if sys.platform.startswith('linux'):\n    os.killpg(1, 9)\n",
    "not windows": "if not sys.platform.startswith('win'):\n    os.killpg(1, 9)\n",
    "and": "if proc and os.name != 'nt':\n    os.killpg(proc.pid, 9)\n",
    "else of nt": "if os.name == 'nt':\n    proc.kill()\nelse:\n    os.killpg(proc.pid, 9)\n",
    "else of nt or": "if os.name == 'nt' or not proc:\n    pass\nelse:\n    os.killpg(1, 9)\n",
    "elif after nt": (
        "if os.name == 'nt':\n    pass\nelif proc:\n    os.killpg(proc.pid, 9)\n"),
    "alias": "WINDOWS = os.name == 'nt'\nif not WINDOWS:\n    os.killpg(1, 9)\n",
    "early return": "def f(p):\n    if os.name == 'nt':\n        return\n    os.killpg(p, 9)\n",
    "early skip": ("def test_x():\n    if sys.platform == 'win32':\n        pytest.skip('posix')\n"
                   "    os.killpg(1, 9)\n"),
    "conditional expression": "sig = 'x' if os.name == 'nt' else signal.SIGKILL\n",
    "skipif test": ("@pytest.mark.skipif(os.name == 'nt', reason='SIGINT')\ndef test_x():\n"
                    "    subprocess.Popen(cmd, preexec_fn=f)\n    open('/tmp/x')\n"),
    "skipif class": ("@pytest.mark.skipif(sys.platform == 'win32', reason='x')\nclass TestX:\n"
                     "    def test_x(self):\n        os.killpg(1, 9)\n"),
    "unittest skipUnless": ("@unittest.skipUnless(os.name == 'posix', 'x')\ndef test_x():\n"
                            "    os.killpg(1, 9)\n"),
    "module pytestmark": ("pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name == 'nt', "
                          "reason='x')]\ndef test_x():\n    os.killpg(1, 9)\n"),
    "module skipped at import": ("if os.name == 'nt':\n    pytest.skip('x', allow_module_level="
                                 "True)\nos.killpg(1, 9)\n"),
    "helper used only off Windows (bootstrap's shape)": (
        "def build():\n    (f / 'x').symlink_to(y)\n\ndef setup():\n    if os.name == 'nt':\n"
        "        pip()\n    else:\n        build()\n"),
    "helper of a helper": (
        "def a():\n    os.killpg(1, 9)\n\ndef b():\n    a()\n\nif os.name != 'nt':\n    b()\n"),
    "docstring and comment": ('"""Kills with os.killpg; reads /proc/self."""\n'
                              "# subprocess.run('x | head -1', shell=True)\n"),
    "a pipe without a shell": "subprocess.run(['phi3-aipc', 'models|x'])\n",
    "a path that merely ends in tmp": "p = '/no/such/tmp'\nq = 'C:/a/proc.txt'\n",
    "a head that is not a program": "subprocess.run([exe, 'head'])\n",
    "signal names as text": "match = 'worker process was killed by SIGKILL'\n",
}


@pytest.mark.parametrize("source", UNGUARDED.values(), ids=UNGUARDED.keys())
def test_planted_posix_only_code_is_refused(source):
    found = problems(source)
    assert len(found) == 1, found
    assert found[0].startswith("<snippet>:") and HINT in found[0]


@pytest.mark.parametrize("source", GUARDED.values(), ids=GUARDED.keys())
def test_posix_only_code_in_a_posix_only_place_is_accepted(source):
    assert problems(source) == []


def test_a_helper_another_module_imports_is_not_taken_as_posix_only():
    source = GUARDED["helper used only off Windows (bootstrap's shape)"]
    assert problems(source, used_elsewhere=frozenset({"build"}))
