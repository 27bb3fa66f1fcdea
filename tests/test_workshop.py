"""The workshop guide's hand-out recipe works: a prepared cache, copied elsewhere, is used as is.

docs/WORKSHOP.md prepares the exports into one cache folder (PHI3_AIPC_CACHE), which attendees
copy to their PCs. Here the stand-in plays Phi-3-mini: prepared into cache A, copied to B, A
deleted; `generate` with PHI3_AIPC_CACHE=B must answer from B's exports without building anything.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from phi3_aipc.cache import MANIFEST
from phi3_aipc.standin import load_chats

from .conftest import run_cli

ROUTES = ["openvino", "onnxruntime-genai"]
CHAT = load_chats()[0]


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` (lock files and manifests aside): its size and modification
    time. A copied folder's manifest is rewritten once, when the copy is adopted."""
    return {f.relative_to(root).as_posix(): (f.stat().st_size, f.stat().st_mtime_ns)
            for f in root.rglob("*") if f.is_file() and f.suffix != ".lock"
            and f.name != MANIFEST}


def generate(route: str, cache: Path):
    system, user = (m["content"] for m in CHAT["messages"])
    return run_cli("generate", "--model", "stand-in", "--backend", route, "--greedy", "--json",
                   "--system", system, "--prompt", user, env={"PHI3_AIPC_CACHE": str(cache)})


@pytest.fixture(scope="module")
def handed_out(tmp_path_factory, stand_in) -> Path:
    """Cache A prepared as the guide says, copied to B (keeping file times), A deleted."""
    a, b = tmp_path_factory.mktemp("facilitator") / "cache", tmp_path_factory.mktemp("attendee")
    # The model comes first (for Phi-3-mini, `hf download`): the stand-in, built once per test run.
    shutil.copytree(stand_in, a / "stand-in" / stand_in.name)
    for route in ROUTES:
        out = run_cli("prepare", "--model", "stand-in", "--backend", route,
                      env={"PHI3_AIPC_CACHE": str(a)})
        assert out.returncode == 0, out.stderr
        assert Path(out.stdout.splitlines()[-1]).is_relative_to(a)
    shutil.copytree(a, b / "cache")
    shutil.rmtree(a)
    return b / "cache"


@pytest.mark.parametrize("route", ROUTES)
def test_a_copied_cache_is_used_without_building_again(handed_out, route):
    listed = run_cli("cache", "list", "--json", env={"PHI3_AIPC_CACHE": str(handed_out)})
    assert route in {e["route"] for e in json.loads(listed.stdout)}
    before = files(handed_out)
    out = generate(route, handed_out)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == CHAT["reply"]
    assert files(handed_out) == before, "generate changed the handed-out cache"
    assert "Exporting" not in out.stderr and "Building" not in out.stderr
    assert "Checking every file" in out.stderr  # a copy: its content is checked
    again = generate(route, handed_out)  # checked in full once, then adopted
    assert again.returncode == 0 and "Checking every file" not in again.stderr
    assert json.loads(again.stdout)["text"] == CHAT["reply"]


def test_a_copy_that_lost_file_times_is_still_used(handed_out):
    """A copy that sets new modification times (some zip tools) is checked, not rebuilt."""
    export = next((handed_out / "openvino" / "stand-in").glob("int4-*"))
    for f in export.rglob("*"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    before = files(handed_out)
    out = generate("openvino", handed_out)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == CHAT["reply"]
    assert files(handed_out) == before
    assert "damaged" not in out.stderr and "Exporting" not in out.stderr
