"""DirectML cannot continue a live ONNX Runtime GenAI generator (issue #29).

`continuous_decoding` is the one rule: where it says no, a chat starts a new generator per turn
fed the whole conversation, and ignoring the end of sequence never feeds a token back. Here the
CPU wheel plays DirectML through tests/directml_double.py: the real library on the CPU, with
`append_tokens` on a generator that holds tokens refused exactly as the DirectML build refuses
it, and the "dml" provider chosen (by the notebook, the route, the chat widget) but not applied.
"""
import importlib.util
import json
from pathlib import Path

import pytest

from phi3_aipc import open_session
from phi3_aipc.models import resolve_model
from phi3_aipc.routes import prepare
from phi3_aipc.standin import END_TOKEN_ID, load_chats

og = pytest.importorskip("onnxruntime_genai")
from . import directml_double  # noqa: E402  (imports onnxruntime_genai)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_directml_onnxruntime_genai.ipynb"
CHATS = load_chats()
INTRO, NPU, SECOND_TURN = CHATS[0], CHATS[2], CHATS[5]
THIRD = "And what does the GPU do?"


@pytest.fixture(scope="module")
def dml_build(stand_in):
    """The stand-in built for DirectML (-e dml): what `--device dml` prepares."""
    return prepare("onnxruntime-genai", "int4", "cpu", resolve_model("stand-in"), target="dml")


@pytest.fixture(scope="module")
def fp32(stand_in):
    """The fp32 CPU build, loaded with the CPU provider, and its tokenizer."""
    folder = prepare("onnxruntime-genai", "fp32", "cpu", resolve_model("stand-in"))
    config = og.Config(str(folder))
    config.clear_providers()
    model = og.Model(config)
    return model, og.Tokenizer(model)


def test_the_rule_follows_the_library_source():
    from phi3_aipc.routes.onnxruntime_genai import continuous_decoding

    for version in ("0.13.1", "0.18.0", "0.16.0-dev"):
        assert continuous_decoding("cpu", version) and continuous_decoding("CPU", version)
        assert not continuous_decoding("dml", version)
        assert not continuous_decoding("DirectML", version)  # Model.device_type's name
        assert continuous_decoding("OpenVINO", version) and continuous_decoding("cuda", version)
    assert not continuous_decoding("qnn", "0.18.0")  # not in the list: a new generator
    assert not continuous_decoding("OpenVINO", "0.8.0")  # added in 0.9
    assert not continuous_decoding("cpu", "0.5.2")  # append_tokens came in 0.6
    assert continuous_decoding("cpu") and not continuous_decoding("dml")  # installed version


def test_the_double_refuses_as_the_library_does(fp32, monkeypatch):
    model, tokenizer = fp32
    # The message is the library's own: both halves around the device's name are in the wheel.
    lib = next((p for p in Path(og.__file__).parent.iterdir()
                if p.name.startswith("libonnxruntime-genai")), None)
    if lib is not None:
        data = lib.read_bytes()
        head, tail = directml_double.MESSAGE.split("DirectML")
        assert head.encode() in data and tail.encode() in data
    directml_double.install(monkeypatch)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=256, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(encode(tokenizer, INTRO["messages"]))
    generator.generate_next_token()
    with pytest.raises(RuntimeError) as refused:
        generator.append_tokens([END_TOKEN_ID])
    assert str(refused.value) == directml_double.MESSAGE
    assert directml_double.LOG["refused"] == 1
    fresh = og.Generator(model, params)  # a new generator takes a prompt, as on DirectML
    fresh.append_tokens(encode(tokenizer, INTRO["messages"]))
    with pytest.raises(RuntimeError, match="exceeds max length"):  # the real checks come first
        og.Generator(model, params).append_tokens(list(range(1, 300)))


@pytest.mark.slow
def test_notebook_02_chats_on_directml(stand_in):
    """The whole notebook, unchanged, in a kernel whose startup (IPKernelApp.exec_lines, before
    any cell) installs the double: the notebook finds DirectML, picks "dml", appends that
    provider (kept on the CPU), and its second turn must not continue the live generator."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One cell added at the end, in memory only: what the double saw.
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json\nfrom tests.directml_double import LOG\nprint('LOG', json.dumps(LOG))"))
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        extra_arguments=[f"--IPKernelApp.exec_lines={directml_double.KERNEL_STARTUP}"])
    client.execute()  # a cell that raises fails the test here (CellExecutionError)

    docs = build_docs()
    docs.coalesce(nb)
    outputs = [docs.text_of(cell) for cell in nb.cells]
    assert any("the dml provider" in out for out in outputs)
    assert docs.check(NOTEBOOK.stem, nb, []) == []  # the first reply, and the second turn
    second = next(out for cell, out in zip(nb.cells, outputs)
                  if "check:second-turn" in cell.metadata.get("tags", []))
    assert SECOND_TURN["reply"] in second
    log = json.loads(outputs[-1].split("LOG", 1)[1])
    assert log["dml_providers"] >= 1  # the notebook chose DirectML
    assert log["generators"] >= 2 and log["refused"] == 0  # a new generator for the 2nd turn


def test_ignore_eos_on_directml_never_feeds_a_token_back(dml_build, monkeypatch):
    settings = dict(greedy=True, ignore_eos=True, max_new_tokens=40)
    # The same build on the CPU provider: it meets a stop token and takes it back.
    with open_session("onnxruntime-genai", "int4", "cpu", model="stand-in",
                      prepare_options={"target": "dml"}) as cpu:
        fed_back = cpu.generate(NPU["messages"], **settings)
    first_stop = next((i for i, t in enumerate(fed_back.token_ids) if t in cpu.stops), None)
    assert first_stop is not None and first_stop < 39  # a DirectML generator would be continued

    directml_double.install(monkeypatch)
    with open_session("onnxruntime-genai", "int4", "dml", model="stand-in") as dml:
        assert dml.device == "dml" and directml_double.LOG["dml_providers"] == 1
        result = dml.generate(NPU["messages"], **settings)
    assert len(result.token_ids) == 40 and result.finish_reason == "length"
    assert directml_double.LOG["refused"] == 0
    assert not set(result.token_ids) & cpu.stops  # min_length: no stop token was chosen
    assert result.token_ids[:first_stop] == fed_back.token_ids[:first_stop]


def test_the_bench_worker_times_directml_with_end_of_sequence_ignored(dml_build, monkeypatch):
    from phi3_aipc.bench.worker import measure

    directml_double.install(monkeypatch)
    spec = {"config": {"route": "onnxruntime-genai", "precision": "int4", "device": "dml"},
            "model": "stand-in", "new_tokens": 48, "lengths": [32], "reps": 2}
    result = measure(spec, lambda event: None)  # raises unless each run gave 48 tokens
    assert result["device"] == "dml" and result["lengths"]["32"]["tpot_ms"]["median"] > 0
    assert directml_double.LOG["generators"] == 3  # a warm-up and two runs
    assert directml_double.LOG["refused"] == 0


def test_a_three_turn_chat_widget_on_directml(dml_build, monkeypatch):
    pytest.importorskip("ipywidgets")
    from phi3_aipc.widgets import ChatWidget

    directml_double.install(monkeypatch)
    chat = ChatWidget(route="onnxruntime-genai", model="stand-in", device="dml",
                      max_new_tokens=48)
    assert chat.device.value == "dml"
    replies = []
    for text in (INTRO["messages"][-1]["content"], NPU["messages"][-1]["content"], THIRD):
        chat.input.value = text
        chat.send_button.click()
        result = chat.wait(timeout=600)  # raises what the reply raised
        assert result is not None and result.device == "dml"
        replies.append(result.text)
    assert chat.session.device == "dml" and len(chat.history) == 6
    chat.session.close()
    assert directml_double.LOG["generators"] == 3 and directml_double.LOG["refused"] == 0
    assert replies[0] == INTRO["reply"] and replies[1] == SECOND_TURN["reply"]


def test_both_strategies_give_the_same_tokens_on_the_cpu(fp32):
    """Three turns, greedy, fp32: one generator continued turn by turn, or a new generator per
    turn fed the whole conversation, as notebook 02 section 8 does on each device."""
    model, tokenizer = fp32
    questions = [INTRO["messages"][-1]["content"], NPU["messages"][-1]["content"], THIRD]
    continued = chat(model, tokenizer, questions, continuous=True)
    fresh = chat(model, tokenizer, questions, continuous=False)
    assert [len(ids) for ids in continued] == [len(ids) for ids in fresh]
    assert continued == fresh
    assert tokenizer.decode(continued[1]).strip() == SECOND_TURN["reply"]


def chat(model, tokenizer, questions: list[str], continuous: bool) -> list[list[int]]:
    """Each turn's generated ids (the closing <|end|> included)."""
    messages = [INTRO["messages"][0]]  # the system prompt
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=1024, do_sample=False)
    generator, turns = None, []
    for question in questions:
        if continuous and generator is not None:
            generator.append_tokens([END_TOKEN_ID])
            generator.append_tokens(encode(tokenizer, [{"role": "user", "content": question}]))
        else:
            generator = og.Generator(model, params)
            generator.append_tokens(encode(tokenizer, messages + [
                {"role": "user", "content": question}]))
        ids = []
        while not generator.is_done() and len(ids) < 64:
            generator.generate_next_token()
            ids.append(int(generator.get_next_tokens()[0]))
        turns.append(ids)
        text = tokenizer.decode([i for i in ids if i != END_TOKEN_ID]).strip()
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
    return turns


def encode(tokenizer, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    return [int(i) for i in tokenizer.encode(text)]


def build_docs():
    """scripts/build_docs.py: the lesson checks of the tagged cells."""
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "scripts" / "build_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
