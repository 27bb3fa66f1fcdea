"""The chat widget, driven from Python as a notebook user would click it, and the stop signal
every route's generate() takes from its streamer."""
import html
import re
import threading
import time

import pytest

from phi3_aipc import open_session
from phi3_aipc.chat import fit_history, prompt_ids
from phi3_aipc.errors import BadInput
from phi3_aipc.standin import load_chats

pytest.importorskip("ipywidgets")
from phi3_aipc.widgets import ChatWidget  # noqa: E402

CHATS = load_chats()
INTRO, AI_PC, NPU, SECOND_TURN = CHATS[0], CHATS[1], CHATS[2], CHATS[5]


def question(chat: dict) -> str:
    return chat["messages"][-1]["content"]


def text_of(widget) -> str:
    """The text an HTML widget shows."""
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))


def items(chat: ChatWidget, css_class: str) -> list:
    return [w for w in chat.transcript.children if css_class in w._dom_classes]


def record_replies(chat: ChatWidget, on_value=None) -> list[str]:
    """Every value each reply widget takes, in order, as the user's screen would show them."""
    seen: list[str] = []

    def watch(change):
        for w in set(change["new"]) - set(change["old"]):
            if "chat-reply" in w._dom_classes:
                def record(c):
                    seen.append(html.unescape(c["new"]))
                    if on_value:
                        on_value(seen)
                w.observe(record, "value")

    chat.transcript.observe(watch, "children")
    return seen


def ask(chat: ChatWidget, text: str):
    chat.input.value = text
    chat.send_button.click()
    result = chat.wait(timeout=600)
    assert not chat.busy
    return result


@pytest.fixture
def chat(stand_in):
    return ChatWidget(route="transformers", model="stand-in", max_new_tokens=64)


def test_a_reply_streams_in_piece_by_piece_with_its_timings(chat):
    seen = record_replies(chat)
    result = ask(chat, question(INTRO))
    reply = INTRO["reply"]
    assert result.text == reply and result.finish_reason == "stop"
    assert text_of(items(chat, "chat-reply")[-1]) == reply
    partial = [s for s in seen if s and s != reply]
    assert len(partial) > 5 and all(reply.startswith(s) for s in partial)
    assert [len(s) for s in partial] == sorted(len(s) for s in partial)  # it only grows
    stats = text_of(items(chat, "chat-stats")[-1])
    assert f"TTFT {result.metrics.ttft_ms:.0f} ms" in stats
    assert f"{result.metrics.tokens_per_s:.1f} tokens/s" in stats
    assert chat.input.value == "" and chat.status.value == "Ready."
    assert not chat.send_button.disabled and chat.stop_button.disabled


def test_second_turn_sees_the_first(chat):
    """The memorized second turn only comes out if the model saw the first turn too."""
    ask(chat, question(INTRO))
    result = ask(chat, question(SECOND_TURN))
    assert result.text == SECOND_TURN["reply"]
    assert chat.history == SECOND_TURN["messages"][1:] + [
        {"role": "assistant", "content": SECOND_TURN["reply"]}]
    assert [text_of(w) for w in items(chat, "chat-user")] == [
        f"You: {question(INTRO)}", f"You: {question(SECOND_TURN)}"]


def test_system_prompt_box_reaches_the_model(chat):
    chat.system.value = "Answer in one short sentence."
    assert ask(chat, "Which route should I try first?").text == CHATS[3]["reply"]
    chat.clear()
    chat.system.value = ""
    assert ask(chat, question(NPU)).text == NPU["reply"]
    assert chat.history[0] == {"role": "user", "content": question(NPU)}


def test_stop_ends_the_reply_mid_generation(chat):
    first_piece = threading.Event()

    def slow_screen(seen):  # a slow model: the click lands while the reply still grows
        first_piece.set()
        time.sleep(0.05)

    seen = record_replies(chat, slow_screen)
    chat.input.value = question(INTRO)
    chat.send_button.click()
    assert first_piece.wait(60) and chat.busy and not chat.stop_button.disabled
    chat.stop_button.click()  # from this (the kernel's) thread, as a click would be
    result = chat.wait(timeout=60)
    full = INTRO["reply"]
    assert result.finish_reason == "stopped"
    assert 0 < len(result.text) < len(full) and full.startswith(result.text)
    assert len(seen) < 5
    assert text_of(items(chat, "chat-reply")[-1]) == result.text
    assert "(stopped)" in text_of(items(chat, "chat-stats")[-1])
    assert chat.status.value.startswith("Stopped")
    assert chat.history[-1] == {"role": "assistant", "content": result.text}
    assert not chat.send_button.disabled and chat.stop_button.disabled
    chat.clear()
    assert ask(chat, question(INTRO)).text == full  # and the next reply is whole again


def test_history_is_trimmed_oldest_first_with_a_note(stand_in):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stand_in)
    longest = max(len(prompt_ids(tokenizer, c["messages"])) for c in (AI_PC, NPU))
    # Room for either question alone, not for one with an earlier turn.
    chat = ChatWidget(route="transformers", model="stand-in", system="", max_new_tokens=40,
                      context=longest + 40)
    assert ask(chat, question(AI_PC)).text == AI_PC["reply"]
    assert not items(chat, "chat-note")
    result = ask(chat, question(NPU))
    assert result.text == NPU["reply"]  # exactly what the model answers with no history
    note = text_of(items(chat, "chat-note")[-1])
    assert "oldest 1 turn " in note and f"{longest + 40}-token context window" in note
    assert chat.history == NPU["messages"] + [{"role": "assistant", "content": NPU["reply"]}]
    assert len(items(chat, "chat-reply")) == 2  # the dropped turn stays on screen


def test_fit_history_drops_whole_turns_oldest_first(stand_in):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stand_in)
    count = lambda messages: len(prompt_ids(tokenizer, messages))  # noqa: E731
    history = SECOND_TURN["messages"][1:3] * 3  # three (user, assistant) turns
    full, dropped = fit_history(count, "Hi", "sys", history, budget=10_000)
    assert dropped == 0 and full[1:-1] == history
    one_turn = count(full[:1] + history[4:] + full[-1:])
    messages, dropped = fit_history(count, "Hi", "sys", history, budget=one_turn)
    assert dropped == 2 and messages[1:-1] == history[4:]
    messages, dropped = fit_history(count, "Hi", "sys", history, budget=1)
    assert dropped == 3 and messages == full[:1] + full[-1:]


def test_an_error_shows_in_the_widget_and_the_chat_goes_on(stand_in):
    chat = ChatWidget(route="transformers", model="stand-in", max_new_tokens=64, context=20)
    with pytest.raises(BadInput, match="context window"):  # wait() raises what the status shows
        ask(chat, question(INTRO))
    assert "BadInput" in chat.status.value and "context window" in chat.status.value
    assert chat.history == [] and not chat.send_button.disabled
    chat.context = 4096
    assert ask(chat, question(INTRO)).text == INTRO["reply"]


def test_route_and_pickers_choose_the_session(stand_in):
    chat = ChatWidget(route="transformers", routes=["transformers", "openvino"],
                      model="stand-in", max_new_tokens=64)
    assert list(chat.precision.options) == ["fp32"] and chat.device.value == "cpu"
    ask(chat, question(INTRO))
    first = chat.session
    assert (first.route, first.precision) == ("transformers", "fp32")

    chat.route.value = "openvino"
    assert chat.session is None
    assert "int8" in chat.precision.options and chat.precision.value == "int4"
    assert chat.device.value == "CPU" and "AUTO" in chat.device.options
    result = ask(chat, question(SECOND_TURN))  # the history carries over to the new route
    assert (chat.session.route, chat.session.precision) == ("openvino", "int4")
    assert result.text == SECOND_TURN["reply"]

    chat.precision.value = "int8"
    assert chat.session is None
    ask(chat, question(NPU))
    assert (chat.session.route, chat.session.precision) == ("openvino", "int8")
    assert "openvino int8 on CPU" in text_of(items(chat, "chat-stats")[-1])


def test_the_model_picker_switches_model_and_starts_a_new_chat(stand_in):
    """Picking Phi-4-mini's stand-in in the chat loads it (its 200k vocabulary, its template)
    and forgets the conversation held with the first model."""
    chat = ChatWidget(route="transformers", model="stand-in", max_new_tokens=64, pick_model=True)
    names = [name for _, name in chat.model_choice.options]
    assert {"microsoft/Phi-4-mini-instruct", "stand-in", "stand-in:phi-4-mini"} <= set(names)
    assert chat.model_choice.value == "stand-in" and chat.model_choice.layout.display != "none"
    assert ask(chat, question(INTRO)).text == INTRO["reply"]
    chat.model_choice.value = "stand-in:phi-4-mini"
    assert chat.session is None and chat.history == [] and "stand-in:phi-4-mini" in \
        text_of(chat.status)
    ask(chat, question(INTRO))
    assert chat.source.name == "stand-in:phi-4-mini"
    assert chat.session.tokenizer.convert_tokens_to_ids("<|end|>") == 200020
    assert len(chat.history) == 2


def test_the_chat_talks_through_a_model_the_notebook_loaded(stand_in):
    """With `loaded=`, the chat uses the notebook's model (no second copy) and labels it by the
    dtype it has: a bf16 model is bf16, not the route's fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stand_in, dtype=torch.bfloat16)
    chat = ChatWidget(route="transformers", model="stand-in", max_new_tokens=64, loaded=model,
                      artifact=stand_in)
    result = ask(chat, question(INTRO))
    assert chat.session.net is model
    assert (result.route, result.precision) == ("transformers", "bf16")
    assert "(bfloat16)" in text_of(items(chat, "chat-note")[0])
    assert chat.route.disabled and chat.precision.disabled  # fixed on the loaded model


def test_unknown_route_is_refused_at_once():
    from phi3_aipc.errors import BadInput

    with pytest.raises(BadInput, match="Unknown route"):
        ChatWidget(route="directml")
    with pytest.raises(BadInput, match="not among its routes transformers"):
        ChatWidget(route="openvino", routes=["transformers"])


ROUTES = [("transformers", "fp32", None), ("openvino", "int4", None),
          ("onnxruntime-genai", "int4", "cpu"), ("npu-library", "int8", None)]


@pytest.mark.parametrize("route,precision,device", ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_stops_when_the_streamer_says_so(stand_in, route, precision, device):
    """The Stop button's signal, one level down: a streamer returning True."""
    from phi3_aipc.routes import get_route

    if not get_route(route).is_installed():
        pytest.skip(f"the {route} route is not installed here")
    session = open_session(route, precision, device, model="stand-in", progress=False)
    pieces: list[str] = []
    result = session.generate(INTRO["messages"], max_new_tokens=300, greedy=True,
                              ignore_eos=True,
                              streamer=lambda piece: pieces.append(piece) or len(pieces) >= 3)
    assert result.finish_reason == "stopped"
    assert len(pieces) == 3 and result.text.startswith("".join(pieces))
    assert len(result.token_ids) < 10  # a worker may finish a token or two before it hears
    again = session.generate(INTRO["messages"], max_new_tokens=64, greedy=True)
    assert again.text == INTRO["reply"] and again.finish_reason == "stop"
    if hasattr(session, "close"):
        session.close()
