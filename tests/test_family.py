"""The Phi family by name: each catalog model's stand-in has its architecture, and every route
gives transformers' greedy ids on it, on a short prompt and on one past 4096 tokens (where
LongRoPE switches from its short to its long factors)."""
import json

import pytest

from phi3_aipc import build_messages, catalog, open_session
from phi3_aipc.chat import prompt_ids
from phi3_aipc.models import resolve_model

from .conftest import run_cli

# Phi-3-mini-128k's stand-in borrows Phi-3.5-mini's LongRoPE factors (see the catalog), which
# makes the two stand-ins the same model: it is checked once, as Phi-3.5-mini.
SHORTS = [m.short for m in catalog.MODELS.values() if m.short != "phi-3-mini-128k"]
LONG_ROPE = [m.short for m in catalog.MODELS.values() if "rope_scaling" in m.config]
ROUTES = ["openvino", "onnxruntime-genai"]
SHORT_PROMPT = "Tell me a story about a lighthouse."
N = 32


@pytest.fixture(scope="module", params=SHORTS)
def stand_in_of(request):
    """(catalog model, its stand-in's source)."""
    return catalog.known(catalog_id(request.param)), resolve_model(f"stand-in:{request.param}",
                                                                    progress=False)


def test_phi_3_mini_128k_stand_in_is_phi_3_5_minis():
    from phi3_aipc.standin import variant, variant_config

    assert variant_config(variant("phi-3-mini-128k")) == variant_config(variant("phi-3.5-mini"))


def catalog_id(short: str) -> str:
    return next(m.id for m in catalog.MODELS.values() if m.short == short)


def config_of(source) -> dict:
    return json.loads((source.path / "config.json").read_text(encoding="utf-8"))


def rope_of(config: dict) -> dict:
    """The LongRoPE settings as saved (transformers 5 writes rope_parameters, 4.x rope_scaling)."""
    return config.get("rope_parameters") or config.get("rope_scaling") or {}


def test_each_stand_in_has_its_models_architecture(stand_in_of):
    model, source = stand_in_of
    real, small = model.config, config_of(source)
    head = real["hidden_size"] // real["num_attention_heads"]
    assert small["hidden_size"] // small["num_attention_heads"] == head  # 96, or 128 for Phi-4
    assert (small["num_attention_heads"] // small["num_key_value_heads"]
            == real["num_attention_heads"] // real["num_key_value_heads"])  # 1, or 3 for Phi-4
    for key in ("vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        assert small[key] == real[key], key
    assert small.get("partial_rotary_factor", 1.0) == real.get("partial_rotary_factor", 1.0)
    rope = rope_of(small)
    if "rope_scaling" in real:
        rotary = int(head * real.get("partial_rotary_factor", 1.0))
        assert rope["long_factor"] == real["rope_scaling"]["long_factor"]
        assert rope["short_factor"] == real["rope_scaling"]["short_factor"]
        assert len(rope["long_factor"]) == rotary // 2  # one factor per rotary frequency
        assert small["original_max_position_embeddings"] == 4096
    else:
        assert rope.get("rope_type", "default") == "default"
    assert small["num_hidden_layers"] == 2 and small["hidden_size"] <= 384


def test_phi4_stand_in_has_phi4s_tokenizer():
    """o200k_base ids (checked against an independent o200k encoder, bpe-openai 0.1.4), Phi-4's
    special tokens at their ids, and Phi-4's chat template (no newline after a role tag)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("stand-in:phi-4-mini").path)
    assert tokenizer.encode("Hello world, what's up? 12345 ÄÖÜ 你好") == [
        13225, 2375, 11, 29400, 869, 30, 220, 7633, 2548, 22424, 9146, 8858, 220, 177519]
    for token, i in {"<|endoftext|>": 199999, "<|assistant|>": 200019, "<|end|>": 200020,
                     "<|user|>": 200021, "<|system|>": 200022}.items():
        assert tokenizer.convert_tokens_to_ids(token) == i
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|system|>Be brief.<|end|><|user|>Hi there<|end|><|assistant|>")
    assert len(tokenizer) == 200064


def long_prompt(tokenizer, over: int = 4096) -> str:
    """A user turn whose chat prompt is a little over `over` tokens."""
    lines, text = [], ""
    while len(prompt_ids(tokenizer, build_messages(text or "x"))) <= over + 64:
        i = len(lines)
        lines.append(f"Line {i}: the keeper counted {i * 7 % 101} ships and {i * 13 % 97} gulls.")
        text = "\n".join(lines)
    return text


@pytest.fixture(scope="module")
def reference(stand_in_of):
    """transformers' greedy ids on the stand-in, for the short and (LongRoPE models) the long
    prompt."""
    model, source = stand_in_of
    with open_session("transformers", model=source, progress=False) as session:
        prompts = {"short": SHORT_PROMPT}
        if model.short in LONG_ROPE:
            prompts["long"] = long_prompt(session.tokenizer)
        ids = {name: session.generate(build_messages(p), greedy=True, ignore_eos=True,
                                      max_new_tokens=N).token_ids for name, p in prompts.items()}
        lengths = {name: len(prompt_ids(session.tokenizer, build_messages(p)))
                   for name, p in prompts.items()}
    return prompts, ids, lengths


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_fp32_gives_transformers_ids(stand_in_of, reference, route):
    model, source = stand_in_of
    prompts, expected, lengths = reference
    if "long" in prompts:
        assert lengths["long"] > 4096  # past original_max_position_embeddings
    with open_session(route, "fp32", model=source, progress=False) as session:
        for name, prompt in prompts.items():
            result = session.generate(build_messages(prompt), greedy=True, ignore_eos=True,
                                      max_new_tokens=N)
            assert result.prompt_tokens == lengths[name], (route, name)
            assert result.token_ids == expected[name], (route, model.short, name)


@pytest.mark.slow
def test_the_reference_depends_on_what_the_routes_must_get_right(stand_in_of, reference,
                                                                   tmp_path):
    """The parity above can fail: the stand-in's reply is varied (not one token repeated), and
    past 4096 tokens it changes when the long LongRoPE factors are replaced by the short ones,
    as in a runtime that missed the switch."""
    import shutil

    model, source = stand_in_of
    prompts, expected, _ = reference
    assert len(set(expected["short"])) > N // 2
    if "long" not in prompts:
        return
    swapped = tmp_path / "swapped"
    shutil.copytree(source.path, swapped)
    config = config_of(source)
    config["rope_scaling"]["long_factor"] = config["rope_scaling"]["short_factor"]
    (swapped / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with open_session("transformers", model=str(swapped), progress=False) as session:
        ids = session.generate(build_messages(prompts["long"]), greedy=True, ignore_eos=True,
                               max_new_tokens=N).token_ids
    assert ids != expected["long"]


@pytest.mark.slow
def test_the_cli_gives_the_same_ids_for_phi4():
    """The issue's own command, on Phi-4-mini's stand-in: OpenVINO against transformers."""
    args = ["generate", "--model", "stand-in:phi-4-mini", "--precision", "fp32", "--greedy",
            "--ignore-eos", "--max-new-tokens", str(N), "--json", "--prompt", SHORT_PROMPT]
    runs = {b: run_cli(*args, "--backend", b) for b in ("openvino", "transformers")}
    for backend, out in runs.items():
        assert out.returncode == 0, (backend, out.stderr)
    ids = {b: json.loads(out.stdout)["token_ids"] for b, out in runs.items()}
    assert len(ids["openvino"]) == N and ids["openvino"] == ids["transformers"]


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_int4_runs_on_phi4(route):
    """int4 with the route's default settings, on Phi-4-mini's shapes (grouped-query attention,
    partial rotary, tied embeddings, 200k vocabulary): it loads and makes the tokens asked for
    (the stand-in never stops early)."""
    with open_session(route, "int4", model="stand-in:phi-4-mini", progress=False) as session:
        result = session.generate(build_messages(SHORT_PROMPT), greedy=True, max_new_tokens=8)
    assert len(result.token_ids) == 8 and result.finish_reason == "length"


@pytest.mark.slow
def test_the_npu_pipeline_emulated_gives_the_cpus_ids_on_phi4():
    """OpenVINO's NPU pipeline (static shapes; emulated on the CPU here) takes Phi-4-mini's
    architecture: on the same int4 export (the NPU's preset) it gives the CPU pipeline's ids."""
    args = ["generate", "--backend", "openvino", "--preset", "npu", "--model",
            "stand-in:phi-4-mini", "--greedy", "--ignore-eos", "--max-new-tokens", "8", "--json",
            "--prompt", SHORT_PROMPT]
    npu = run_cli(*args, "--device", "NPU", "--emulate-npu")
    cpu = run_cli(*args, "--device", "CPU")
    assert npu.returncode == 0 and cpu.returncode == 0, npu.stderr + cpu.stderr
    npu, cpu = json.loads(npu.stdout), json.loads(cpu.stdout)
    assert npu["device"] == "NPU (emulated on CPU)"
    assert len(npu["token_ids"]) == 8 and npu["token_ids"] == cpu["token_ids"]


def test_models_lists_the_four_with_their_stand_ins_and_checked_routes():
    out = run_cli("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert list(rows) == list(catalog.MODELS)
    for model in catalog.MODELS.values():
        row = rows[model.id]
        assert row["stand_in"] == f"stand-in:{model.short}"
        assert "openvino CPU (fp32 = transformers)" in row["checked"]
        assert "onnxruntime-genai cpu (fp32 = transformers)" in row["checked"]
        # Phi-3-mini-4k and Phi-3.5-mini have a published NPU build; the others say how to make one
        ready = model.short in ("phi-3-mini-4k", "phi-3.5-mini")
        assert row["npu"].startswith("NPU-ready build" if ready else "no NPU-ready build"), row
        assert ready or "--sym --group-size -1 --ratio 1.0" in row["npu"]


def test_an_unknown_variant_is_refused_in_one_line():
    out = run_cli("generate", "--model", "stand-in:phi-5", "--prompt", "hi")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "stand-in:phi-4-mini" in out.stderr


@pytest.mark.slow
def test_the_route_notebooks_run_on_phi4():
    """nbval runs notebooks 00, 02 and 03 with PHI3_AIPC_MODEL=stand-in:phi-4-mini: nothing in
    them assumes Phi-3's vocabulary, heads or chat template."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = ["00_check_your_ai_pc", "02_directml_onnxruntime_genai", "03_openvino"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p",
                          "no:cacheprovider", *(f"notebooks/{n}.ipynb" for n in names)],
                         cwd=root, capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "PHI3_AIPC_MODEL": "stand-in:phi-4-mini",
                              # optimum-cli, as in an activated environment
                              "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                                       os.environ.get("PATH", "")])})
    assert out.returncode == 0, out.stdout[-4000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
