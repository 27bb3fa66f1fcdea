"""The stand-in: reproducible, a real Phi-3 with Phi-3's tokenizer, built whole or not at all."""
import hashlib
import json

import pytest

from phi3_aipc import standin
from phi3_aipc.cache import build_once


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_recipe_same_weights(stand_in, tmp_path):
    standin.build(tmp_path, progress=False)
    for name in ("model.safetensors", "config.json", "generation_config.json",
                 "tokenizer.json", "tokenizer_config.json"):
        assert sha256(tmp_path / name) == sha256(stand_in / name), name


def test_is_a_phi3_with_the_real_vocabulary(stand_in):
    config = json.loads((stand_in / "config.json").read_text())
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert config["model_type"] == "phi3"
    assert config["vocab_size"] == 32064
    generation = json.loads((stand_in / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [32000, 32001, 32007]
    assert "stand-in" in (stand_in / "README.md").read_text()


def test_cached_under_the_recipe_key(stand_in):
    assert stand_in == standin.stand_in_path()
    assert stand_in.name == standin.recipe_key()


def test_interrupted_build_leaves_nothing(tmp_path):
    final = tmp_path / "artifact"

    def half_build(folder):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(final, half_build)
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []
    build_once(final, lambda folder: (folder / "ok").write_text("done"))
    assert (final / "ok").read_text() == "done"
