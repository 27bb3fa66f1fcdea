"""The ONNX Runtime GenAI route on the stand-in: real builds, real generation on the CPU provider.

DirectML itself needs Windows; here the DirectML build is checked on the CPU provider.
"""
import json

import pytest

from phi3_aipc import open_session
from phi3_aipc.chat import prompt_ids
from phi3_aipc.errors import BadInput, ModelNotFound
from phi3_aipc.models import resolve_model
from phi3_aipc.routes import prepare
from phi3_aipc.routes.onnxruntime_genai import (
    OnnxRuntimeGenAISession,
    build_options,
    builder_command,
    builder_option_names,
    built_for,
    check_model_folder,
    cpu_threads,
    onnx_weights,
)
from phi3_aipc.routes.plan import Plan
from phi3_aipc.standin import load_chats

from .conftest import PARITY_STRINGS, cli_json, run_cli

og = pytest.importorskip("onnxruntime_genai")
CHATS = load_chats()
UNSEEN = "Tell me a story about a lighthouse."
ROUTE = ["--backend", "onnxruntime-genai"]


@pytest.fixture(scope="module")
def builds(stand_in):
    source, route = resolve_model("stand-in"), "onnxruntime-genai"
    return {
        "fp32": prepare(route, "fp32", "cpu", source),
        "int4": prepare(route, "int4", "cpu", source),
        "int4-dml": prepare(route, "int4", "cpu", source, target="dml"),
    }


@pytest.fixture(scope="module")
def session(builds):
    return open_session("onnxruntime-genai", "fp32", "cpu", model="stand-in")


def test_fp32_gives_the_reference_ids_on_an_unseen_prompt(builds):
    args = ["--greedy", "--ignore-eos", "--max-new-tokens", "32", "--prompt", UNSEEN]
    reference = cli_json("--backend", "transformers", *args)
    ort = cli_json(*ROUTE, "--precision", "fp32", *args)
    assert len(ort["token_ids"]) == 32 and ort["finish_reason"] == "length"
    assert 32007 in ort["token_ids"]  # it went on past the stop token, as the reference did
    assert ort["token_ids"] == reference["token_ids"]
    assert ort["prompt_tokens"] == reference["prompt_tokens"]


def test_cpu_int4_gives_the_reference_replies_and_stops(builds):
    reference = open_session("transformers", model="stand-in")
    session = open_session("onnxruntime-genai", "int4", "cpu", model="stand-in")
    for chat in CHATS:
        want = reference.generate(chat["messages"], greedy=True)
        got = session.generate(chat["messages"], greedy=True)
        assert got.token_ids == want.token_ids
        assert got.text == chat["reply"] and got.finish_reason == "stop"


def test_a_directml_build_runs_on_the_cpu_provider_and_says_so(builds):
    assert built_for(check_model_folder(builds["int4-dml"])) == "dml"
    out = run_cli("generate", "--model", "stand-in", *ROUTE, "--precision", "int4",
                  "--target", "dml", "--greedy", "--prompt", CHATS[1]["messages"][-1]["content"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[onnxruntime-genai | cpu | int4 | stand-in]\n")
    assert "built for DirectML (-e dml); it runs here on the CPU provider" in out.stdout
    assert CHATS[1]["reply"] in out.stdout


def test_default_device_falls_back_to_the_cpu_and_says_why(builds):
    result = cli_json(*ROUTE, "--greedy", "--prompt", CHATS[2]["messages"][-1]["content"])
    assert result["device"] == "cpu"
    assert result["device_note"] == "Using the CPU provider: DirectML exists only on Windows."
    assert result["text"] == CHATS[2]["reply"]


def test_directml_where_it_is_not_installed_is_refused():
    out = run_cli("generate", "--model", "stand-in", *ROUTE, "--device", "dml", "--prompt", "hi")
    assert out.returncode == 2
    assert "DirectML needs Windows and the onnxruntime-genai-directml package" in out.stderr


def test_a_cpu_build_is_refused_on_directml(builds):
    with pytest.raises(BadInput, match="built for the CPU .* --device dml"):
        plan = Plan("onnxruntime-genai", "int4", "dml")  # as if DirectML were here
        OnnxRuntimeGenAISession(plan, builds["int4"], "stand-in")


def test_a_folder_without_genai_config(stand_in):
    with pytest.raises(ModelNotFound, match="no genai_config.json"):
        check_model_folder(stand_in)


def test_prompt_longer_than_the_context(session):
    with pytest.raises(BadInput, match="context window is 4096"):
        session.generate([{"role": "user", "content": "word " * 5000}])


@pytest.mark.parametrize("text", PARITY_STRINGS)
def test_tokenizer_ids_match_hugging_face(session, text):
    assert [int(i) for i in session.og_tokenizer.encode(text)] == \
        session.hf_tokenizer(text)["input_ids"]


def test_chat_template_matches_hugging_face(session):
    for chat in CHATS:
        assert session.prompt_ids(chat["messages"]) == \
            prompt_ids(session.hf_tokenizer, chat["messages"])


def test_decoded_text_matches_hugging_face(session):
    # ORT GenAI's own decoder keeps a leading space that Hugging Face strips...
    ids = session.hf_tokenizer("I am the stand-in.")["input_ids"]
    assert session.og_tokenizer.decode(ids) == " I am the stand-in."
    # ...so the route decodes with the Hugging Face tokenizer: text and stream match.
    pieces = []
    result = session.generate(CHATS[0]["messages"], greedy=True, streamer=pieces.append)
    assert result.text == CHATS[0]["reply"] == "".join(pieces)
    emoji = session.generate([{"role": "user", "content": PARITY_STRINGS[3]}], greedy=True,
                             ignore_eos=True, max_new_tokens=12)
    assert emoji.text == session.hf_tokenizer.decode(emoji.token_ids, skip_special_tokens=True)


def test_builds_record_their_settings(builds):
    made = json.loads((builds["int4"] / "phi3-aipc.json").read_text())
    assert made["options"] == {"target": "cpu", "block_size": 128, "accuracy_level": 4,
                               "prune_lm_head": True}
    assert made["command"][:3] == ["python", "-m", "onnxruntime_genai.models.builder"]
    dml = json.loads((builds["int4-dml"] / "phi3-aipc.json").read_text())
    assert dml["options"] == {"target": "dml", "block_size": 32, "accuracy_level": 0}
    # ...and the models are built that way (0.18's builder ignores settings it does not know).
    assert matmul_settings(builds["int4"]) == {(128, 4)}
    assert {block for block, _ in matmul_settings(builds["int4-dml"])} == {32}


def prompt_logits(folder, ids: list[int]):
    """The logits the model gives for a prompt going in at once (positions x vocabulary)."""
    import numpy as np

    config = og.Config(str(folder))
    config.clear_providers()
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    return np.asarray(generator.get_output("logits"))[0]


def test_cpu_builds_give_the_prompt_s_last_logits_and_the_session_every_position_s(builds):
    """prune_lm_head: the output layer sees the prompt's last position only on the CPU (not on
    DirectML, whose generators cannot take the window a token at a time). The session's logits,
    which `phi3-aipc quality` reads, still cover every position: row i is what the prompt's
    first i+1 tokens give at their last position."""
    import numpy as np

    session = OnnxRuntimeGenAISession(Plan("onnxruntime-genai", "fp32", "cpu"), builds["fp32"],
                                      "stand-in")
    ids = session.prompt_ids([{"role": "user", "content": UNSEEN}])
    assert len(prompt_logits(builds["fp32"], ids)) == 1
    assert len(prompt_logits(builds["int4-dml"], ids)) == len(ids)
    rows = session.logits(ids)
    assert rows.shape == (len(ids), session.vocab_size)
    for i in (0, len(ids) // 2, len(ids) - 1):
        assert np.allclose(rows[i], prompt_logits(builds["fp32"], ids[:i + 1])[-1], atol=1e-3)


def matmul_settings(folder) -> set[tuple[int, int]]:
    """(block_size, accuracy_level) of the model's int4 MatMuls."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    return {(a["block_size"], a.get("accuracy_level", 0)) for a in
            ({x.name: x.i for x in n.attribute} for n in model.graph.node
             if n.op_type == "MatMulNBits")}


def test_quantizing_with_the_weights_left_on_disk_gives_the_same_model(builds, tmp_path):
    """Notebook 02 gives MatMulNBitsQuantizer the graph without its weights, so that onnx reads
    each weight from the data file when asked (10.1 GB at full size otherwise): the int4 model
    must come out byte for byte as from the whole model in memory."""
    import os

    import onnx
    from onnx.external_data_helper import load_external_data_for_model
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    source, settings = builds["fp32"], {"block_size": 128, "is_symmetric": True,
                                        "accuracy_level": 4}
    whole = MatMulNBitsQuantizer(str(source / "model.onnx"), **settings)
    lazy = MatMulNBitsQuantizer(onnx.load(str(source / "model.onnx"), load_external_data=False),
                                **settings)
    here = os.getcwd()
    whole.process()
    os.chdir(source)  # as in the notebook: the data file's name is relative to the current folder
    try:
        lazy.process()
    finally:
        os.chdir(here)
    load_external_data_for_model(lazy.model.model, str(source))
    for name, quantizer in (("whole", whole), ("lazy", lazy)):
        (tmp_path / name).mkdir()
        quantizer.model.save_model_to_file(str(tmp_path / name / "model.onnx"),
                                           use_external_data_format=True)
    assert matmul_settings(tmp_path / "lazy") == {(128, 4)}
    for f in ("model.onnx", "model.onnx.data"):
        assert (tmp_path / "lazy" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f


def test_the_decoder_file_is_the_one_genai_config_names(builds, tmp_path):
    """Microsoft's prebuilt builds name the decoder after the build, not model.onnx."""
    import onnx

    name = "phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx"
    folder = tmp_path / "prebuilt"
    folder.mkdir()
    config = json.loads((builds["int4"] / "genai_config.json").read_text())
    config["model"]["decoder"]["filename"] = name
    (folder / "genai_config.json").write_text(json.dumps(config))
    onnx.save_model(onnx.load(str(builds["int4"] / "model.onnx")), str(folder / name),
                    save_as_external_data=True, location=name + ".data")
    assert not (folder / "model.onnx").exists() and (folder / (name + ".data")).is_file()
    assert onnx_weights(folder) == onnx_weights(builds["int4"])


def test_build_options():
    assert build_options("fp16", "dml", None, None) == {"target": "dml"}
    with pytest.raises(BadInput, match="fp16 is built for dml"):
        build_options("fp16", "cpu", None, None)
    with pytest.raises(BadInput, match="fp32 is built for cpu"):
        build_options("fp32", "dml", None, None)
    with pytest.raises(BadInput, match="block_size must be"):
        build_options("int4", "cpu", 48, None)
    with pytest.raises(BadInput, match="int4 builds only"):
        build_options("fp32", "cpu", 32, None)
    cmd = builder_command("m", "out", "int4", build_options("int4", "cpu", 128, 1), "c")
    block, level = builder_option_names()
    assert cmd[cmd.index("-e") + 1] == "cpu" and f"{block}=128" in cmd
    assert f"{level}=1" in cmd
    # CPU builds prune the output layer to the last position unless asked not to; DirectML's not
    assert "prune_lm_head=true" in cmd
    assert build_options("int4", "cpu", None, None, False) == {
        "target": "cpu", "block_size": 128, "accuracy_level": 4}
    assert "prune_lm_head=true" not in builder_command(
        "m", "out", "int4", build_options("int4", "dml", None, None), "c")
    with pytest.raises(BadInput, match="prune_lm_head applies to CPU builds"):
        build_options("int4", "dml", None, None, True)


def test_the_cpu_thread_count_is_ort_s_own_except_on_linux_cores_without_smt():
    linux = dict(linux=True, hybrid=False, usable=64)
    assert cpu_threads(cores=2, logical=2, **linux) == 2  # CI's VM
    assert cpu_threads(cores=8, logical=16, **linux) is None  # SMT: ORT's half is every core
    assert cpu_threads(linux=False, cores=2, logical=2, hybrid=False) is None  # Windows, macOS
    assert cpu_threads(linux=True, cores=8, logical=8, hybrid=True) is None  # not measured
    assert cpu_threads(cores=8, logical=8, linux=True, hybrid=False, usable=3) == 3  # cpuset


def test_the_cpu_session_runs_the_thread_count_the_rule_gives(builds, monkeypatch):
    """ONNX Runtime's intra-op pool starts threads - 1 threads beside the caller's: the route's
    session starts as many more than one without the route's option as its count is above
    ORT's own (half the logical CPUs on Linux)."""
    import os

    import psutil

    from phi3_aipc.routes import onnxruntime_genai

    threads = cpu_threads()
    if threads is None:
        pytest.skip("ONNX Runtime's own thread count applies on this CPU")
    process = psutil.Process()
    plan = Plan("onnxruntime-genai", "int4", "cpu")

    def started() -> int:
        before = process.num_threads()
        session = OnnxRuntimeGenAISession(plan, builds["int4"], "stand-in")
        count = process.num_threads() - before
        del session
        return count

    started()  # the libraries' own threads start with the process's first session
    with_option = started()
    monkeypatch.setattr(onnxruntime_genai, "cpu_session_options", lambda: {})
    assert with_option - started() == threads - max(1, (os.cpu_count() or 1) // 2)
