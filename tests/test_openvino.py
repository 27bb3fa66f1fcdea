"""The OpenVINO route on the stand-in: real exports, real OpenVINO GenAI generation.

Exports are cached in the test cache, so each precision is exported once per recipe.
"""
import json
import shutil
from pathlib import Path

import pytest

from phi3_aipc import open_session
from phi3_aipc.cache import MANIFEST, folder_size_mb, seal
from phi3_aipc.errors import BadInput, ModelNotFound
from phi3_aipc.models import resolve_model
from phi3_aipc.routes import prepare
from phi3_aipc.routes.openvino import check_export, export_command, weight_options
from phi3_aipc.standin import load_chats

from .conftest import PARITY_STRINGS, cli_json, run_cli

pytest.importorskip("openvino_genai")
CHATS = load_chats()
UNSEEN = "Tell me a story about a lighthouse."


@pytest.fixture(scope="module")
def exports(stand_in):
    """fp32, int8, int4 (default preset) and int4 (npu preset) exports of the stand-in."""
    source = resolve_model("stand-in")
    return {
        "fp32": prepare("openvino", "fp32", model=source),
        "int8": prepare("openvino", "int8", model=source),
        "int4": prepare("openvino", "int4", model=source),
        "npu": prepare("openvino", "int4", model=source, preset="npu"),
    }


@pytest.mark.slow
def test_fp32_gives_the_reference_ids_on_an_unseen_prompt(exports):
    args = ["--greedy", "--ignore-eos", "--max-new-tokens", "32", "--prompt", UNSEEN]
    reference = cli_json("--backend", "transformers", *args)
    openvino = cli_json("--backend", "openvino", "--precision", "fp32", *args)
    assert len(openvino["token_ids"]) == 32
    assert openvino["token_ids"] == reference["token_ids"]
    assert openvino["prompt_tokens"] == reference["prompt_tokens"]


@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_quantized_exports_give_the_reference_replies_and_stop(exports, precision):
    reference = open_session("transformers", model="stand-in")
    session = open_session("openvino", precision, model="stand-in")
    assert session.device == "CPU"
    for chat in CHATS:
        want = reference.generate(chat["messages"], greedy=True)
        got = session.generate(chat["messages"], greedy=True)
        assert got.token_ids == want.token_ids
        assert got.text == chat["reply"]
        assert got.finish_reason == "stop"


def test_quantized_exports_are_at_most_half_the_fp32_size(exports):
    fp32 = folder_size_mb(exports["fp32"])
    for name in ("int8", "int4", "npu"):
        assert folder_size_mb(exports[name]) <= fp32 / 2, name


def test_manifest_records_the_settings_used(exports):
    made = json.loads((exports["int4"] / MANIFEST).read_text())
    assert made["precision"] == "int4"
    assert made["options"] == {"sym": True, "group_size": -1, "ratio": 1.0}
    assert "--group-size" in made["command"] and "--sym" in made["command"]
    npu = json.loads((exports["npu"] / MANIFEST).read_text())
    assert npu["options"] == {"sym": True, "group_size": -1, "ratio": 1.0}


def test_streaming_and_metrics(exports):
    session = open_session("openvino", "int4", model="stand-in")
    pieces = []
    result = session.generate(CHATS[0]["messages"], greedy=True, streamer=pieces.append)
    assert "".join(pieces) == result.text == CHATS[0]["reply"]
    m = result.metrics
    assert m.ttft_ms > 0 and m.tpot_ms > 0 and m.tokens_per_s > 0 and m.load_s > 0


@pytest.mark.slow
def test_emulated_npu_matches_the_cpu_on_the_same_export(exports):
    args = ["--backend", "openvino", "--preset", "npu", "--greedy", "--prompt"]
    for chat in CHATS[1:3]:
        prompt = chat["messages"][-1]["content"]
        cpu = cli_json(*args, prompt)
        npu = cli_json(*args, prompt, "--device", "NPU", "--emulate-npu")
        assert npu["token_ids"] == cpu["token_ids"] and npu["text"] == chat["reply"]
        assert npu["device"] == "NPU (emulated on CPU)"
        assert "not NPU timings" in npu["device_note"]
        assert npu["finish_reason"] == "stop"


def test_emulated_npu_refuses_a_prompt_over_max_prompt_len(exports):
    out = run_cli("generate", "--model", "stand-in", "--backend", "openvino", "--preset", "npu",
                  "--device", "NPU", "--emulate-npu", "--max-prompt-len", "32",
                  "--prompt", "word " * 40)
    assert out.returncode == 2
    assert "MAX_PROMPT_LEN of 32" in out.stderr and "--max-prompt-len" in out.stderr


def test_asym_for_the_npu_is_refused_before_exporting(tmp_path):
    out = run_cli("generate", "--model", "stand-in", "--backend", "openvino", "--asym",
                  "--device", "NPU", "--emulate-npu", "--prompt", "hi",
                  env={"PHI3_AIPC_CACHE": str(tmp_path)})
    assert out.returncode == 2
    assert "This int4 export is not ready for the NPU: asymmetric int4 (int4_asym) (as asked)" \
        in out.stderr
    assert not (tmp_path / "openvino").exists()


def test_emulated_npu_refuses_an_asymmetric_int4_export(stand_in):
    with pytest.raises(BadInput, match="phi3-aipc prepare --route openvino --device NPU"):
        open_session("openvino", "int4", "NPU", model="stand-in",
                     prepare_options={"sym": False}, load_options={"emulate_npu": True})


@pytest.mark.parametrize("device,message", [
    ("NPU", "No NPU found: OpenVINO sees CPU"), ("GPU", "No GPU found: OpenVINO sees CPU")])
def test_missing_device_is_refused_before_any_export(device, message, tmp_path):
    out = run_cli("generate", "--model", "stand-in", "--backend", "openvino", "--device", device,
                  "--prompt", "hi", env={"PHI3_AIPC_CACHE": str(tmp_path)})
    assert out.returncode == 2
    assert message in out.stderr
    if device == "NPU":
        assert "--emulate-npu" in out.stderr
    assert not (tmp_path / "openvino").exists()


def test_the_npu_build_is_prepared_without_an_npu(stand_in):
    """`prepare --device NPU` writes the NPU's export (symmetric, channel-wise) on a PC without
    one, to copy to a PC that has one; before, it was refused with a hint to an option that
    `prepare` does not have (--emulate-npu). (In the shared test cache: a cache of its own
    trained the stand-in again, four minutes.)"""
    out = run_cli("prepare", "--backend", "openvino", "--device", "NPU", "--model", "stand-in")
    assert out.returncode == 0, out.stderr
    made = json.loads((Path(out.stdout.strip().splitlines()[-1]) / MANIFEST).read_text())
    assert made["precision"] == "int4"
    assert {k: made["options"][k] for k in ("sym", "group_size", "ratio")} == \
        {"sym": True, "group_size": -1, "ratio": 1.0}


def test_unknown_device_lists_the_route_devices():
    out = run_cli("generate", "--model", "stand-in", "--backend", "openvino", "--device", "TPU",
                  "--prompt", "hi")
    assert out.returncode == 2
    assert "runs on CPU, GPU, NPU, AUTO; got device 'TPU'" in out.stderr


def test_not_an_openvino_export(stand_in):
    with pytest.raises(ModelNotFound, match="is not an OpenVINO export"):
        check_export(stand_in)


def test_an_export_folder_can_be_given_as_the_model(exports):
    session = open_session("openvino", "int8", model=str(exports["int8"]))
    assert session.generate(CHATS[2]["messages"], greedy=True).text == CHATS[2]["reply"]
    with pytest.raises(BadInput, match="is a int8 export, not int4"):
        open_session("openvino", "int4", model=str(exports["int8"]))


def test_prepare_cli_prints_the_cached_export_last(exports):
    out = run_cli("prepare", "--backend", "openvino", "--precision", "int4", "--model",
                  "stand-in")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(exports["int4"])


def test_weight_options():
    assert weight_options("int4") == {"sym": True, "group_size": -1, "ratio": 1.0}
    assert weight_options("int4", preset="grouped") == {"sym": True, "group_size": 128,
                                                        "ratio": 1.0}
    assert weight_options("int4", preset="reference") == {"sym": True, "group_size": 128,
                                                          "ratio": 0.6}
    assert weight_options("int4", preset="npu", group_size=128)["group_size"] == 128
    assert weight_options("int8") == {"sym": False}
    assert weight_options("fp16") == {}
    for bad in [dict(preset="fast"), dict(ratio=0), dict(group_size=0), dict(awq=True)]:
        with pytest.raises(BadInput):
            weight_options("int4", **bad)
    with pytest.raises(BadInput, match="only apply to int4/int8"):
        weight_options("fp16", group_size=64)
    assert weight_options("int4", all_layers=True)["all_layers"] is True
    with pytest.raises(BadInput, match="per-channel"):
        weight_options("int8", all_layers=True)


def test_export_command_is_explicit(tmp_path):
    cmd = export_command(tmp_path / "m", tmp_path / "out", "int4",
                         weight_options("int4", preset="reference"))
    assert cmd[:3] == ["optimum-cli", "export", "openvino"]
    assert cmd[cmd.index("--weight-format") + 1] == "int4"
    assert cmd[cmd.index("--group-size") + 1] == "128" and cmd[cmd.index("--ratio") + 1] == "0.6"
    assert "--sym" in cmd and "--all-layers" not in cmd
    cmd = export_command(tmp_path / "m", tmp_path / "out", "int4",
                         weight_options("int4", all_layers=True))
    assert "--all-layers" in cmd  # int4 for the embedding and output layers too


@pytest.mark.slow
def test_awq_and_scale_estimation_with_self_generated_calibration_data(stand_in, tmp_path):
    out = run_cli("prepare", "--backend", "openvino", "--precision", "int4", "--model",
                  str(stand_in), "--dataset", "auto", "--awq", "--scale-estimation",
                  "--num-samples", "8", env={"PHI3_AIPC_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "Applying data-aware AWQ" in out.stderr and "Scale Estimation" in out.stderr
    folder = out.stdout.strip().splitlines()[-1]
    made = json.loads(open(f"{folder}/{MANIFEST}").read())
    assert made["options"]["awq"] and made["options"]["dataset"] == "auto"
    session = open_session("openvino", "int4", model=folder)
    assert session.generate(CHATS[0]["messages"], max_new_tokens=8).token_ids


@pytest.mark.slow
def test_a_failed_export_is_a_clear_error_and_leaves_no_artifact(stand_in, tmp_path):
    # groups of 512 pass our check (a power of two) but not nncf's: the stand-in's layers are
    # 128 wide (a group size that is no power of two is now refused before the export)
    out = run_cli("prepare", "--backend", "openvino", "--model", str(stand_in),
                  "--group-size", "512", env={"PHI3_AIPC_CACHE": str(tmp_path)})
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("phi3-aipc: error: The OpenVINO export failed: ")
    assert "group size value 512" in last and "--group-size 512" in last
    leftovers = [p for p in (tmp_path / "openvino").rglob("*") if p.suffix != ".lock"]
    assert [p for p in leftovers if p.is_file()] == []


def test_auto_device_gives_the_cpu_ids(exports):
    cpu = open_session("openvino", "int4", "CPU", model="stand-in")
    auto = open_session("openvino", "int4", "AUTO", model="stand-in")
    assert auto.device == "AUTO"
    for chat in CHATS[:2]:
        assert auto.generate(chat["messages"], greedy=True).token_ids == \
            cpu.generate(chat["messages"], greedy=True).token_ids


@pytest.mark.parametrize("text", PARITY_STRINGS)
def test_openvinos_tokenizer_gives_hugging_faces_ids_and_text(exports, text):
    import openvino_genai as ov_genai
    from transformers import AutoTokenizer

    ours, theirs = ov_genai.Tokenizer(str(exports["int4"])), AutoTokenizer.from_pretrained(
        exports["int4"])
    ids = theirs(text)["input_ids"]
    assert [int(i) for i in ours.encode(text).input_ids.data[0]] == ids
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


def test_the_prompt_is_openvinos_own_chat_template_and_matches_hugging_faces(exports, tmp_path):
    from transformers import AutoTokenizer

    from phi3_aipc.chat import prompt_ids

    theirs = AutoTokenizer.from_pretrained(exports["int4"])
    with open_session("openvino", "int4", model=str(exports["int4"]), progress=False) as session:
        for chat in CHATS:
            assert session.prompt_ids(chat["messages"]) == prompt_ids(theirs, chat["messages"])
    # The count is the pipeline's own: with its template changed (no <|end|> after a turn),
    # the session's prompt changes and no longer matches.
    changed = tmp_path / "int4"
    shutil.copytree(exports["int4"], changed)
    xml = changed / "openvino_tokenizer.xml"
    xml.write_text(xml.read_text(encoding="utf-8").replace("&lt;|end|>", ""), encoding="utf-8")
    seal(changed)  # as made: the sizes in its manifest are the changed file's
    with open_session("openvino", "int4", model=str(changed), progress=False) as session:
        messages = CHATS[0]["messages"]
        assert session.prompt_ids(messages) != prompt_ids(theirs, messages)
