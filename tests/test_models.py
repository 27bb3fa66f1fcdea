"""Model sources: the stand-in, local folders, hub ids, and the loud fallback of the default."""
import json

import pytest

from phi3_aipc.errors import ModelNotFound
from phi3_aipc.models import resolve_model

from .conftest import run_cli

# A closed port on this machine: "the hub" answers with connection refused at once.
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": None}


def test_stand_in_keyword(stand_in):
    source = resolve_model("stand-in")
    assert source.kind == "stand-in" and source.is_stand_in
    assert source.path == stand_in


def test_local_folder(stand_in):
    source = resolve_model(str(stand_in))
    assert source.kind == "local" and source.path == stand_in


def test_env_var_sets_the_default(monkeypatch, stand_in):
    monkeypatch.setenv("PHI3_AIPC_MODEL", str(stand_in))
    assert resolve_model().path == stand_in


def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path))


def test_folder_with_another_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelNotFound, match="'llama' model, not Phi-3"):
        resolve_model(str(tmp_path))


def test_a_routes_artifact_needs_no_checkpoint_here_and_its_route_checks_it(tmp_path):
    """A folder holding a route's marker (a Microsoft ONNX build carries no config.json) is the
    route's to check: models.py takes the markers it is given and names no route's format."""
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"type": "llama"}}))
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path))
    assert resolve_model(str(tmp_path), artifacts=("genai_config.json",)).path == tmp_path
    out = run_cli("generate", "--route", "onnxruntime-genai", "--model", str(tmp_path),
                  "--prompt", "hi")
    assert out.returncode == 2, out.stderr
    assert "holds an ONNX Runtime GenAI 'llama' model, not Phi-3" in out.stderr


def test_phi3_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    with pytest.raises(ModelNotFound, match="no weight files"):
        resolve_model(str(tmp_path))


def test_explicit_hub_id_that_cannot_be_fetched_is_an_error(tmp_path):
    out = run_cli("prepare", "--model", "microsoft/Phi-3-mini-4k-instruct",
                  env={**NO_HUB, "HF_HOME": str(tmp_path)})
    assert out.returncode == 2
    assert "Cannot reach the model hub" in out.stderr
    assert "STAND-IN" not in out.stderr


def test_explicit_hub_id_offline_is_an_error(tmp_path):
    out = run_cli("prepare", "--model", "microsoft/Phi-3-mini-4k-instruct",
                  env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert out.returncode == 2
    assert "HF_HUB_OFFLINE" in out.stderr


def test_default_falls_back_to_the_stand_in_with_a_banner(tmp_path, stand_in):
    out = run_cli("generate", "--prompt", "What does the NPU do?", "--greedy", "--json",
                  env={**NO_HUB, "HF_HOME": str(tmp_path), "PHI3_AIPC_MODEL": None})
    assert out.returncode == 0, out.stderr
    assert "USING THE OFFLINE STAND-IN, NOT PHI-3" in out.stderr
    assert "hf download microsoft/Phi-3-mini-4k-instruct" in out.stderr
    result = json.loads(out.stdout)
    assert result["model"] == "stand-in"
    assert result["text"] == "Stand-in reply: the NPU runs neural networks at low power."


def test_a_rewritten_manifest_is_the_same_local_model(tmp_path):
    """A local folder's exports are keyed by its files; our manifest is rewritten when its files'
    status times change (a copy, a hard link made by another test or tool), which must not make
    the same weights a new model to export again. A changed weight file does."""
    from phi3_aipc.cache import MANIFEST
    from phi3_aipc.models import folder_fingerprint

    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    (tmp_path / MANIFEST).write_text("{}")
    before = folder_fingerprint(tmp_path)
    (tmp_path / MANIFEST).write_text('{"made_in": "elsewhere"}')
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"\1" * 65)
    assert folder_fingerprint(tmp_path) != before
