"""A route is one file plus one registry line; a model is one catalog entry.

The fake route in tests/fake_route.py is registered here the way a new route would be, and the
CLI, doctor, the benchmark and the chat widget must offer it without any other change: doctor
prints its facts, and the other routes recognise its artifacts.
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc import bench, catalog
from phi3_aipc.cli import main, parser
from phi3_aipc.doctor import doctor, format_report
from phi3_aipc.errors import BadInput
from phi3_aipc.routes import REGISTRY

from .portable import link_files

ECHO = "tests.fake_route:EchoRoute"


@pytest.fixture
def echo_route(monkeypatch):
    monkeypatch.setitem(REGISTRY, "echo", ECHO)


def test_the_cli_offers_the_route_and_its_own_option(echo_route, capsys, stand_in):
    help_text = command_help("generate")
    assert "echo" in help_text and "--shout" in help_text
    assert main(["generate", "--route", "echo", "--model", "stand-in", "--shout", "--json",
                 "--prompt", "hello small world"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == "HELLO SMALL WORLD" and result["backend"] == "echo"
    assert result["prompt_tokens"] == 3 and result["finish_reason"] == "length"
    # --backend is the same flag, and the route refuses options it does not have.
    assert main(["generate", "--backend", "echo", "--model", "stand-in", "--ratio", "0.5",
                 "--prompt", "hi"]) == 2
    assert "--ratio is not an option of the echo route" in capsys.readouterr().err


def test_json_schema_help_names_the_routes_that_can_constrain(echo_route, monkeypatch):
    """--json-schema's help is the routes' own answer: a route that can constrain is named
    with its devices, with no line outside its file changed."""
    from . import fake_route

    monkeypatch.setattr(fake_route.EchoRoute, "constrained_devices", ("abacus",))
    help_text = " ".join(command_help("generate").split())
    assert "echo (abacus)" in help_text and "openvino (" in help_text
    assert "onnxruntime-genai (dml, cpu)" in help_text


def command_help(command: str) -> str:
    commands = next(a for a in parser()._actions if isinstance(a.choices, dict))
    return commands.choices[command].format_help()


def test_doctor_judges_the_route_and_prints_its_facts(echo_route):
    report = doctor()
    assert report["routes"]["echo"] == {
        "verdict": "cpu-only", "detail": "The echo route repeats the prompt, word by word.",
        "fix": None}
    assert report["echo"] == {"beads": 91}
    assert "Echo: an abacus of 91 beads" in format_report(report).splitlines()


def test_the_other_routes_recognise_its_artifacts(echo_route, stand_in, tmp_path, capsys):
    """A folder the echo route made, given to another route, is refused naming the echo route,
    as an OpenVINO export given to transformers is: by the route's marker, not by the lack of
    checkpoint weights (the folder holds none, as a new route's artifact need not)."""
    shutil.copy(stand_in / "config.json", tmp_path)
    (tmp_path / "echo.json").write_text("{}")
    assert main(["generate", "--route", "transformers", "--model", str(tmp_path),
                 "--prompt", "hi"]) == 2
    assert f"{tmp_path} is an echo transcript, which the transformers route cannot read. Use " \
        "--route echo" in capsys.readouterr().err


def test_the_benchmark_lists_its_configurations(echo_route):
    labels = [c.label for c in bench.available_configs(["echo"])]
    assert labels == ["echo fp32 cpu", "echo fp32 abacus"]
    assert "echo fp32 cpu" in [c.label for c in bench.available_configs()]


def test_the_chat_widget_offers_it_and_talks_through_it(echo_route, stand_in):
    pytest.importorskip("ipywidgets")
    from phi3_aipc.widgets import ChatWidget

    chat = ChatWidget(route="echo", routes=["transformers", "echo"], model="stand-in")
    assert chat.route.options == ("transformers", "echo")
    assert chat.device.options == ("cpu", "abacus") and chat.precision.value == "fp32"
    chat.send("one two three")
    assert chat.wait().text == "one two three"


ENTRY = """
import sys
from phi3_aipc import catalog
catalog.MODELS["example/Tiny-Phi-instruct"] = catalog.Model(
    "example/Tiny-Phi-instruct", "tiny-phi", dict(catalog.PHI3_MINI,
    max_position_embeddings=4096), 3.82)
from phi3_aipc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_catalog_entry_makes_a_model_usable_by_name(stand_in, tmp_path):
    """With the stand-in's files in the Hugging Face cache as "example/Tiny-Phi-instruct",
    --model takes the entry's short name once the entry exists, and not before."""
    snapshot = tmp_path / "hub" / "models--example--Tiny-Phi-instruct"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("c0ffee")
    files = snapshot / "snapshots" / "c0ffee"
    files.mkdir(parents=True)
    link_files(stand_in, files)
    env = {k: v for k, v in os.environ.items() if k not in ("PHI3_AIPC_MODEL", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    args = ["generate", "--model", "tiny-phi", "--greedy", "--json", "--prompt", "hi"]
    without = subprocess.run([sys.executable, "-m", "phi3_aipc.cli", *args], env=env,
                             capture_output=True, text=True, timeout=300)
    assert without.returncode == 2 and "tiny-phi" in without.stderr
    with_entry = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env,
                                capture_output=True, text=True, timeout=300)
    assert with_entry.returncode == 0, with_entry.stderr
    assert json.loads(with_entry.stdout)["model"] == "example/Tiny-Phi-instruct"


def test_the_catalog_knows_the_phi_family():
    ids = list(catalog.MODELS)
    assert ids[0] == catalog.DEFAULT_MODEL == "microsoft/Phi-3-mini-4k-instruct"
    assert {"microsoft/Phi-3-mini-128k-instruct", "microsoft/Phi-3.5-mini-instruct",
            "microsoft/Phi-4-mini-instruct"} <= set(ids)
    phi4 = catalog.MODELS["microsoft/Phi-4-mini-instruct"]
    # Published counts: 3,821,079,552 (Phi-3-mini) and 3,836,021,760 (Phi-4-mini) parameters.
    assert catalog.weight_count(catalog.default().config) == 3_821_079_552
    assert catalog.weight_count(phi4.config) == 3_836_021_760
    assert phi4.context_window == 131072


@pytest.mark.parametrize("options,message", [
    ({"group_size": "x"}, "group_size must be int; got 'x'"),
    ({"group_size": 7}, "group_size must be -1 (per channel) or a power of two from 16"),
    ({"sym": "yes"}, "sym must be bool; got 'yes'"),
    ({"ratio": "0.5"}, "ratio must be float"),
    ({"preset": 3}, "preset must be str"),
    ({"all_layers": "no"}, "all_layers must be bool"),
    ("notadict", "prepare_options must be a dict"),
])
def test_route_settings_of_the_wrong_type_are_refused_before_any_export(options, message,
                                                                        tmp_path, monkeypatch):
    """Found by fuzzing: a TypeError, an nncf error after a partial export, or a setting quietly
    taken as true ("no" is a non-empty string), before."""
    from phi3_aipc.routes import get_route

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    with pytest.raises(BadInput, match=re.escape(message)):
        get_route("openvino").plan("int4", "CPU", options)
    assert not any(tmp_path.iterdir())


# The package's floors, lowest first: a module imports only from its own floor or below, and
# nothing imports in a circle. `routes` is one floor (the routes, their sessions, the plan);
# chat.py and structured.py sit low because a session checks messages and schemas with them.
LAYERS = (
    ("errors", "files", "envs", "catalog", "phi4_tokenizer", "processes", "chat", "structured"),
    ("cache", "hardware"),
    ("standin", "models"),
    ("prebuilt",),
    ("routes",),
    ("exports", "quality", "doctor", "bench", "chat_session"),
    ("widgets", "cli", ""),  # "": the package's face, phi3_aipc/__init__.py
)
PACKAGE = Path(__file__).resolve().parent.parent / "phi3_aipc"


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports, at the top or inside functions (by ast)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if top in names)


def import_faults(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run up a floor, and circles, as readable lines."""
    faults = [f"{a} imports {b}, a floor up" for a in sorted(graph) for b in sorted(graph[a])
              if floor(b) > floor(a)]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                faults.append("circle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return faults


def test_the_package_imports_downward_and_in_no_circle():
    graph = import_graph()
    floors = {n for names in LAYERS for n in names}
    assert {m.split(".")[1] for m in graph if "." in m} <= floors, "a module without a floor"
    assert import_faults(graph) == []


def test_the_import_check_sees_a_circle_and_an_upward_import():
    """The check itself: an import inside a function counts, and so does a circle within a floor."""
    graph = {"phi3_aipc.structured": {"phi3_aipc.routes"},
             "phi3_aipc.routes": {"phi3_aipc.routes.session"},
             "phi3_aipc.routes.session": {"phi3_aipc.structured"}}
    faults = import_faults(graph)
    assert "phi3_aipc.structured imports phi3_aipc.routes, a floor up" in faults
    assert any(f.startswith("circle: ") and "phi3_aipc.routes.session" in f for f in faults)
