"""The chat without a screen (phi3_aipc.chat_session), on the echo route of tests/fake_route.py:
what the chat widget draws, told in order, with no ipywidgets and no model to run."""
import threading

import pytest

from phi3_aipc.chat_session import ChatSession, ChatView
from phi3_aipc.errors import BadInput
from phi3_aipc.routes import REGISTRY

from .fake_route import EchoSession


class Recorder(ChatView):
    """Every event as (name, value); `on_piece` runs at each streamed piece."""

    def __init__(self, on_piece=None) -> None:
        self.events: list[tuple[str, object]] = []
        self.on_piece = on_piece

    def loading(self, route, precision, device):
        self.events.append(("loading", f"{route} {precision} {device}"))

    def note(self, text):
        self.events.append(("note", text))

    def asking(self, text):
        self.events.append(("asking", text))

    def streamed(self, text):
        self.events.append(("streamed", text))
        if self.on_piece:
            self.on_piece(text)

    def answered(self, result):
        self.events.append(("answered", result.text))

    def failed(self, error):
        self.events.append(("failed", str(error)))

    def idle(self):
        self.events.append(("idle", None))


@pytest.fixture
def echo(monkeypatch, stand_in):
    monkeypatch.setitem(REGISTRY, "echo", "tests.fake_route:EchoRoute")


def test_a_reply_is_told_in_order_and_kept(echo):
    view = Recorder()
    chat = ChatSession("echo", "stand-in", "fp32", "abacus", system="be brief", view=view)
    result = chat.reply("one two three")
    assert result.text == "one two three" and result.device == "abacus"
    assert view.events == [("loading", "echo fp32 abacus"), ("asking", "one two three"),
                           ("streamed", "one"), ("streamed", "one two"),
                           ("streamed", "one two three"), ("answered", "one two three")]
    session = chat.session
    chat.reply("four five")  # the same session, the first turn kept
    assert chat.session is session and view.events.count(("loading", "echo fp32 abacus")) == 1
    assert chat.conversation.history == [
        {"role": "user", "content": "one two three"},
        {"role": "assistant", "content": "one two three"},
        {"role": "user", "content": "four five"}, {"role": "assistant", "content": "four five"}]


def test_choices_reload_and_another_model_starts_a_new_chat(echo):
    chat = ChatSession("echo", "stand-in", view=Recorder())
    chat.reply("hello")
    assert chat.session.device == "cpu"
    assert chat.view.events[0] == ("loading", "echo fp32 cpu")  # the defaults, resolved
    chat.choose(device="abacus")
    assert chat.session is None and len(chat.conversation.history) == 2  # the chat goes on
    assert chat.reply("again").device == "abacus"
    chat.choose_model("stand-in:phi-4-mini")
    assert chat.session is None and chat.source is None and chat.conversation.history == []


def test_stop_ends_the_reply_in_its_thread_and_the_text_so_far_stays(echo):
    chat = ChatSession("echo", "stand-in", view=Recorder(on_piece=lambda text: chat.stop()))
    chat.send("one two three four")
    result = chat.wait(timeout=60)
    assert not chat.busy and result.finish_reason == "stopped" and result.text == "one"
    assert chat.conversation.history[-1] == {"role": "assistant", "content": "one"}
    chat.view.on_piece = None
    chat.send("five six")  # the next reply is whole again
    assert chat.wait(timeout=60).text == "five six"


def test_one_reply_at_a_time_and_a_failure_is_told_and_raised(echo):
    release = threading.Event()
    view = Recorder(on_piece=lambda text: release.wait(60))
    chat = ChatSession("echo", "stand-in", context=4, max_new_tokens=2, view=view)
    chat.send("short")
    with pytest.raises(BadInput, match="Still answering"):
        chat.send("again")
    release.set()
    assert chat.wait(timeout=60).text == "short"
    chat.send("a much longer message")  # 4 prompt tokens, 2 to reply, a window of 4
    with pytest.raises(BadInput, match="context window"):
        chat.wait(timeout=60)
    assert view.events[-2][0] == "failed" and view.events[-1] == ("idle", None)
    assert chat.result is None and len(chat.conversation.history) == 2


def test_a_device_prompt_limit_drops_the_oldest_turns_with_a_note(echo, monkeypatch):
    """The NPU pipeline's MAX_PROMPT_LEN, as a session states it (`prompt_limit`): the oldest
    turns go, whole, and a note says so."""
    monkeypatch.setattr(EchoSession, "prompt_limit", 8, raising=False)
    view = Recorder()
    chat = ChatSession("echo", "stand-in", view=view)
    chat.reply("a b c d e")  # 5 prompt tokens (the echo's tokens are words)
    chat.reply("f g h i j")  # 5 + 5 + 5 with the first turn: over 8, so it goes
    assert ("note", "(The oldest 1 turn of this chat no longer fit the device's 8-token prompt "
            "limit (MAX_PROMPT_LEN), so the model no longer sees them.)") in view.events
    assert [m["content"] for m in chat.conversation.history] == ["f g h i j"] * 2


def test_the_context_window_drops_the_oldest_turns_with_a_note(echo):
    """Without a device limit the note names the window the turns no longer fit."""
    view = Recorder()
    chat = ChatSession("echo", "stand-in", context=12, max_new_tokens=2, view=view)
    chat.reply("a b c d e")
    chat.reply("f g h i j")  # 5 + 5 + 5 with the first turn: over the 10 the window leaves
    assert ("note", "(The oldest 1 turn of this chat no longer fit the model's 12-token "
            "context window with room for the reply, so the model no longer sees them.)") \
        in view.events


def test_a_loaded_model_needs_its_folder():
    with pytest.raises(BadInput, match="artifact="):
        ChatSession("transformers", "stand-in", loaded=object())
    with pytest.raises(BadInput, match="Unknown route"):
        ChatSession("directml")
