"""The notebooks' export helpers (`exports.openvino_int4`, `exports.onnx_int4`): a learner's own
export in the cache's notebooks/ folder is adopted, checked and sealed on first use, never made
again; a folder there that is no finished export is refused and kept."""
import shutil

import pytest

from phi3_aipc import prepare, resolve_model
from phi3_aipc.cache import MANIFEST, read_manifest
from phi3_aipc.errors import BadInput
from phi3_aipc.exports import export_dir, onnx_int4, openvino_int4


def test_a_learners_export_is_adopted_not_made_again(stand_in, tmp_path, monkeypatch):
    made = prepare("openvino", "int4", model="stand-in", progress=False)  # the test cache's
    source = resolve_model("stand-in", progress=False)  # the test cache's too
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))  # the notebooks' folder: empty
    mine = export_dir(source, "int4-ov")  # as notebook 03's export cell leaves it: no manifest
    shutil.copytree(made, mine, ignore=shutil.ignore_patterns(MANIFEST))
    weights = (mine / "openvino_model.bin").stat()
    assert openvino_int4(source) == mine
    assert "files" in read_manifest(mine), "adopted: sealed as it is"
    assert (mine / "openvino_model.bin").stat().st_mtime_ns == weights.st_mtime_ns
    assert not list(mine.parent.glob(".int4-ov.tmp-*")), "nothing was built"
    assert openvino_int4(source) == mine  # now a sealed folder like any other


def test_a_folder_that_is_no_export_is_refused_and_kept(stand_in, tmp_path, monkeypatch):
    source = resolve_model("stand-in", progress=False)
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    mine = export_dir(source, "int4-cpu")
    mine.mkdir()
    (mine / "notes.txt").write_text("half an export")
    with pytest.raises(BadInput, match="is not a finished export"):
        onnx_int4(source, "cpu")
    assert (mine / "notes.txt").read_text() == "half an export"


def test_a_learners_export_that_does_not_load_is_refused_in_one_line_and_kept(
        stand_in, tmp_path, monkeypatch):
    """All its files are there but the weights are cut short (an interrupted copy): the
    library's error on loading it is one line saying what to do, and the folder stays."""
    made = prepare("openvino", "int4", model="stand-in", progress=False)
    source = resolve_model("stand-in", progress=False)
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    mine = export_dir(source, "int4-ov")
    shutil.copytree(made, mine, ignore=shutil.ignore_patterns(MANIFEST))
    weights = mine / "openvino_model.bin"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(BadInput) as refused:
        openvino_int4(source)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{mine} is not a finished export: ")
    assert "delete it or pass another folder" in message
    assert "Incorrect weights in bin file!" in message  # OpenVINO's reason, not its source
    assert weights.stat().st_size == (made / "openvino_model.bin").stat().st_size // 2
    assert MANIFEST not in {p.name for p in mine.iterdir()}, "not sealed"


class Stop(Exception):
    """Raised where the export command would run: the test needs only what came before."""


@pytest.mark.parametrize("helper", ["prepare", "notebook"])
def test_the_default_path_checks_memory_once(helper, stand_in, tmp_path, monkeypatch):
    """The prebuilt choice checks that the export fits (PHI3_AIPC_PREBUILT=auto); the export
    then does not check again. The notebook helper checked twice before."""
    from phi3_aipc import catalog, prebuilt
    from phi3_aipc.models import ModelSource
    from phi3_aipc.routes import base

    calls = []

    def counted(*args):
        calls.append(args)

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))  # nothing exported before
    monkeypatch.setenv("PHI3_AIPC_PREBUILT", "auto")
    for module in (prebuilt, base):
        monkeypatch.setattr(module, "preflight", counted)
    monkeypatch.setattr(base, "run_tool", stop)
    source = ModelSource(catalog.DEFAULT_MODEL, stand_in, "hub")  # has a prebuilt build
    with pytest.raises(Stop):
        if helper == "prepare":
            prepare("onnxruntime-genai", model=source, progress=False)
        else:
            onnx_int4(source, "cpu")
    assert len(calls) == 1
