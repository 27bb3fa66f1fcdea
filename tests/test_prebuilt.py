"""Prebuilt models: the catalog's ready-made builds, found in the Hugging Face cache offline.

The stand-in's own exports are laid out in a Hugging Face cache under the publishers' repository
ids (the layout huggingface_hub reads offline: refs/main holds a commit, snapshots/<commit> the
files), and `--prebuilt` must then run exactly as after a real download, with the hub
unreachable. Before this was fixed, the prebuilt download refused an offline machine even when
the build was cached.
"""
import json
import os
from pathlib import Path

import pytest

from phi3_aipc import catalog
from phi3_aipc.cli import main
from phi3_aipc.routes import prepare
from phi3_aipc.standin import load_chats

from .conftest import run_cli
from .portable import link_files
from .test_architecture import command_help

CHAT = load_chats()[1]
MODEL = catalog.DEFAULT_MODEL
UNREACHABLE = {"HF_ENDPOINT": "http://127.0.0.1:9", "PHI3_AIPC_MODEL": None}


def place_in_hub_cache(hub: Path, repo: str, subfolder: str, files: Path) -> None:
    """Lay out `files` as huggingface_hub caches `repo` (at `subfolder` inside it)."""
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    target = root / "snapshots" / "0123456789abcdef0123456789abcdef01234567" / subfolder
    target.mkdir(parents=True, exist_ok=True)
    link_files(files, target)


def build_for(route: str, device: str) -> catalog.Prebuilt:
    return next(p for p in catalog.default().prebuilt_for(route) if device in p.devices)


@pytest.fixture(scope="module")
def hub(stand_in, tmp_path_factory):
    """A Hugging Face home whose cache holds the stand-in's builds under the prebuilt ids."""
    home = tmp_path_factory.mktemp("hf-home")
    # By name, as the other tests ask for it: the test cache's exports are reused, not remade.
    openvino = prepare("openvino", "int4", model="stand-in")
    for route, device, export in [
            ("openvino", "CPU", openvino),
            # The same export is channel-wise and symmetric: it stands in for the NPU's build.
            ("openvino", "NPU", openvino),
            ("onnxruntime-genai", "cpu", prepare("onnxruntime-genai", "int4", "cpu",
                                                 "stand-in"))]:
        p = build_for(route, device)
        place_in_hub_cache(home / "hub", p.repo, p.subfolder, export)
    place_in_hub_cache(home / "hub", MODEL, "", stand_in)  # the checkpoint, under its real id
    return home


@pytest.mark.parametrize("route,device", [("openvino", "CPU"), ("onnxruntime-genai", "cpu")])
@pytest.mark.parametrize("offline", [{"HF_HUB_OFFLINE": "1"}, UNREACHABLE],
                         ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_a_cached_prebuilt_build_runs_offline(hub, route, device, offline):
    p = build_for(route, device)
    out = run_cli("generate", "--route", route, "--prebuilt", "--model", MODEL, "--greedy",
                  "--json", "--prompt", CHAT["messages"][-1]["content"],
                  env={**offline, "HF_HOME": str(hub)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["model"] == "/".join(filter(None, [p.repo, p.subfolder]))
    assert result["text"] == CHAT["reply"] and result["finish_reason"] == "stop"


@pytest.mark.parametrize("route,device", [("openvino", "CPU"), ("onnxruntime-genai", "cpu")])
def test_the_default_request_takes_the_prebuilt_build_when_asked(hub, route, device, tmp_path):
    """Without --prebuilt, PHI3_AIPC_PREBUILT decides for a catalog model, as in the notebooks
    (what the chat widget and the benchmark ask for): `yes` takes the publisher's build, `no`
    exports the checkpoint. Before, only --prebuilt did, so the chat exported on a small PC."""
    p = build_for(route, device)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hub), "PHI3_AIPC_MODEL": None,
           "PHI3_AIPC_CACHE": str(tmp_path)}
    args = ["generate", "--route", route, "--model", MODEL, "--greedy", "--json",
            "--prompt", CHAT["messages"][-1]["content"]]
    taken = run_cli(*args, env={**env, "PHI3_AIPC_PREBUILT": "yes"})
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["model"] == "/".join(filter(None, [p.repo, p.subfolder]))
    assert f"Using the publisher's prebuilt {route} build" in taken.stderr
    assert not list(tmp_path.rglob("phi3-aipc.json")), "an export was made"
    exported = run_cli(*args, env={**env, "PHI3_AIPC_PREBUILT": "no"})
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["model"] == MODEL
    assert "prebuilt" not in exported.stderr
    if route != "onnxruntime-genai":
        return  # the rest is route-agnostic, and the ORT build is the quicker one here
    # settings of one's own are an export of one's own, whatever the choice
    mine = run_cli(*args, "--block-size", "64", env={**env, "PHI3_AIPC_PREBUILT": "yes"})
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["model"] == MODEL


def test_prepare_prints_the_cached_build(hub):
    p = build_for("onnxruntime-genai", "cpu")
    out = run_cli("prepare", "--route", "onnxruntime-genai", "--prebuilt", "--model", MODEL,
                  env={**UNREACHABLE, "HF_HOME": str(hub)})
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert folder.is_dir() and folder.as_posix().endswith(p.subfolder)
    assert str(hub) in os.path.realpath(folder.parent) or str(hub) in str(folder)


def test_a_prebuilt_build_not_in_the_cache_needs_the_hub(tmp_path):
    p = build_for("openvino", "CPU")
    out = run_cli("prepare", "--route", "openvino", "--prebuilt", "--model", MODEL,
                  env={**UNREACHABLE, "HF_HOME": str(tmp_path)})
    assert out.returncode == 2
    assert f"Cannot reach the model hub to download {p.repo}" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", "stand-in"], "No prebuilt openvino build for CPU is known for 'stand-in'"),
    (["--device", "NPU", "--emulate-npu", "--model", "phi-4-mini"],
     "No prebuilt openvino build for NPU is known for 'microsoft/Phi-4-mini-instruct'"),
    (["--precision", "fp16"], "A prebuilt model comes as it is"),
    (["--group-size", "64"], "A prebuilt model comes as it is"),
])
def test_what_has_no_prebuilt_build_is_refused(args, message, capsys):
    assert main(["generate", "--route", "openvino", "--prebuilt", "--prompt", "hi", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_notebooks_take_the_prebuilt_builds_offline(hub, stand_in, monkeypatch):
    """With the real model's id (the stand-in's files cached under it) and
    PHI3_AIPC_PREBUILT=yes, notebooks 02 and 03 run on the cached prebuilt builds, offline, as
    after a real download, and their lessons print what they should."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("build_docs", root / "scripts/build_docs.py")
    build_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_docs)
    for key, value in {"PHI3_AIPC_MODEL": MODEL, "HF_HOME": str(hub), "HF_HUB_OFFLINE": "1",
                       "PHI3_AIPC_PREBUILT": "yes"}.items():
        monkeypatch.setenv(key, value)
    out = hub / "site"
    problems = build_docs.build(out, ["02_directml_onnxruntime_genai", "03_openvino",
                                      "05_chat"])
    assert problems == []
    for name, route in [("02_directml_onnxruntime_genai", "onnxruntime-genai"),
                        ("03_openvino", "openvino"), ("05_chat", "onnxruntime-genai"),
                        ("05_chat", "openvino")]:
        page = (out / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        built = build_for(route, "cpu" if route == "onnxruntime-genai" else "CPU")
        assert f"Using the prebuilt build {built.repo}" in page, name
    # notebook 05's chat widget talks to the same prebuilt build, not an export of its own
    chat = build_for("openvino", "CPU")
    assert f"| {chat.repo} |" in (out / "notebooks/05_chat.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hub_without_weights(hub, stand_in, tmp_path_factory):
    """The same cache, but the checkpoint without its weights (as after fetching only its
    configuration and tokenizer, or a download stopped halfway)."""
    import shutil

    home = tmp_path_factory.mktemp("hf-home-no-weights")
    shutil.copytree(hub / "hub", home / "hub", symlinks=True)
    checkpoint = home / "hub" / f"models--{MODEL.replace('/', '--')}"
    for f in checkpoint.rglob("*.safetensors"):
        f.unlink()
    return home


@pytest.mark.parametrize("route", ["openvino", "onnxruntime-genai"])
def test_the_prebuilt_path_never_needs_the_checkpoints_weights(hub_without_weights, route,
                                                                tmp_path):
    """Choosing the prebuilt build needs only config.json: the 7.6 GB of weights are fetched
    when an export needs them, and a cache without them is not taken for a checkpoint."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hub_without_weights), "PHI3_AIPC_MODEL": None,
           "PHI3_AIPC_CACHE": str(tmp_path)}
    args = ["generate", "--route", route, "--model", MODEL, "--greedy", "--json",
            "--prompt", CHAT["messages"][-1]["content"]]
    taken = run_cli(*args, env={**env, "PHI3_AIPC_PREBUILT": "yes"})
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["text"] == CHAT["reply"]
    exported = run_cli(*args, env={**env, "PHI3_AIPC_PREBUILT": "no"})
    assert exported.returncode == 2, exported.stderr
    assert f"{MODEL} is not in the local Hugging Face cache and HF_HUB_OFFLINE" in \
        exported.stderr


def test_an_earlier_export_is_used_when_memory_is_short_now(stand_in, tmp_path, monkeypatch,
                                                            capsys):
    """In auto mode the choice is made by what fits now; an export made earlier, when it
    fitted, is used rather than a download of the publisher's build."""
    import psutil

    from phi3_aipc.models import ModelSource
    from phi3_aipc.routes import get_route, prebuilt_instead

    class Short:
        available = 10**8  # 0.1 GB free now

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    monkeypatch.delenv("PHI3_AIPC_PREBUILT", raising=False)
    route = get_route("onnxruntime-genai")
    plan = route.plan("int4", "cpu")
    source = ModelSource(MODEL, stand_in, "hub")  # the stand-in's files as the real model's
    with monkeypatch.context() as short:
        short.setattr(psutil, "virtual_memory", lambda: Short())
        assert prebuilt_instead(route, plan, source).prebuilt  # nothing exported: download
    made = route.prepare(plan, source)  # exported while it fitted
    assert made == route.export_folder(plan, source)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Short())
    capsys.readouterr()
    assert not prebuilt_instead(route, plan, source).prebuilt
    assert "prebuilt" not in capsys.readouterr().err


@pytest.mark.parametrize("wanted", ["auto", "yes"])
def test_skip_preflight_exports_rather_than_take_the_prebuilt_build(stand_in, monkeypatch,
                                                                    wanted):
    """--skip-preflight with the route's default settings asks for an export whatever the
    memory estimate says; before, the default request still took the publisher's build."""
    import psutil

    from phi3_aipc.models import ModelSource
    from phi3_aipc.routes import get_route, prebuilt_instead

    class Short:
        available = 10**8  # 0.1 GB free: auto would download the publisher's build

    monkeypatch.setenv("PHI3_AIPC_PREBUILT", wanted)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Short())
    route = get_route("onnxruntime-genai")
    source = ModelSource(MODEL, stand_in, "hub")
    assert prebuilt_instead(route, route.plan("int4", "cpu"), source).prebuilt
    plan = route.plan("int4", "cpu", {"skip_preflight": True})
    assert plan.is_default and plan.skip_preflight
    assert prebuilt_instead(route, plan, source) == plan


def test_naming_a_setting_at_its_default_value_asks_for_an_export(stand_in, monkeypatch,
                                                                   capsys):
    """--block-size 128 is the CPU's default, yet a request that names it is one's own: it
    exports, as docs/models.md and --prebuilt's help say ("names none of the route's settings")."""
    from phi3_aipc.models import ModelSource
    from phi3_aipc.routes import get_route, prebuilt_instead
    from phi3_aipc.routes.onnxruntime_genai import DEFAULT_BLOCK_SIZE

    monkeypatch.setenv("PHI3_AIPC_PREBUILT", "yes")
    route = get_route("onnxruntime-genai")
    source = ModelSource(MODEL, stand_in, "hub")
    named = route.plan("int4", "cpu", {"block_size": DEFAULT_BLOCK_SIZE["cpu"]})
    assert not named.is_default and prebuilt_instead(route, named, source) == named
    assert prebuilt_instead(route, route.plan("int4", "cpu"), source).prebuilt
    models = " ".join((Path(__file__).parent.parent / "docs/models.md").read_text().split())
    assert "a request that names none of the route's settings" in models
    assert "names none of the route's settings" in " ".join(command_help("prepare").split())
