"""The real Phi-3 tokenizer and chat template, pinned to Phi-3-mini's ids."""
import re

import pytest

from phi3_aipc.chat import build_messages, check_fits, prompt_ids, prompt_text, stop_token_ids
from phi3_aipc.errors import BadInput
from phi3_aipc.standin import load_tokenizer

REFERENCE = [{"role": "system", "content": "You are a helpful AI assistant."},
             {"role": "user", "content": "Can you introduce yourself?"}]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_llama_vocabulary_ids(tokenizer):
    assert tokenizer("Can you introduce yourself?")["input_ids"] == [1815, 366, 14944, 7535, 29973]
    assert tokenizer.decode([1815, 366, 14944, 7535, 29973]) == "Can you introduce yourself?"


@pytest.mark.parametrize("token,token_id", [
    ("<|endoftext|>", 32000), ("<|assistant|>", 32001), ("<|system|>", 32006),
    ("<|end|>", 32007), ("<|user|>", 32010), ("<unk>", 0), ("<s>", 1), ("</s>", 2)])
def test_special_token_ids(tokenizer, token, token_id):
    assert tokenizer.convert_tokens_to_ids(token) == token_id


def test_prompt_text_and_ids(tokenizer):
    assert prompt_text(tokenizer, REFERENCE) == (
        "<|system|>\nYou are a helpful AI assistant.<|end|>\n"
        "<|user|>\nCan you introduce yourself?<|end|>\n<|assistant|>\n")
    assert prompt_ids(tokenizer, REFERENCE) == [
        32006, 887, 526, 263, 8444, 319, 29902, 20255, 29889, 32007,
        32010, 1815, 366, 14944, 7535, 29973, 32007, 32001]


def test_multi_turn_prompt(tokenizer):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    messages = build_messages("Bye", system="Be brief.", history=history)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert prompt_text(tokenizer, messages) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nBye<|end|>\n<|assistant|>\n")
    ids = prompt_ids(tokenizer, messages)
    assert ids[0] == 32006 and ids[-1] == 32001 and ids.count(32007) == 4


def test_no_bos_token(tokenizer):
    assert 1 not in prompt_ids(tokenizer, REFERENCE)


def test_stop_tokens_come_from_the_generation_config(stand_in):
    assert stop_token_ids(stand_in) == [32000, 32001, 32007]


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(BadInput, match="empty"):
        build_messages(prompt)


def test_context_checks():
    check_fits(100, 100, 4096)
    with pytest.raises(BadInput, match="at least 1"):
        check_fits(10, 0, 4096)
    with pytest.raises(BadInput, match="context window is 4096"):
        check_fits(5000, 10, 4096)
    with pytest.raises(BadInput, match="at most 96"):
        check_fits(4000, 200, 4096)


@pytest.mark.parametrize("messages,message", [
    ("hi", "non-empty list"), ([], "non-empty list"), ([{"role": "user"}], "messages[0] must be"),
    ([{"content": "hi"}], "messages[0] must be"), ([{"role": "wizard", "content": "x"}], "wizard"),
    ([{"role": "user", "content": 5}], "messages[0] must be"), (["hi"], "messages[0] must be"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
     "The last message must be the user's turn")])
def test_malformed_messages_are_refused_before_the_template(messages, message):
    """Found by fuzzing: jinja's UndefinedError, TypeError and IndexError from the templates."""
    from phi3_aipc.chat import check_messages

    with pytest.raises(BadInput, match=re.escape(message)):
        check_messages(messages)
    assert check_messages([{"role": "system", "content": ""}, {"role": "user", "content": "hi"}])


def test_an_unknown_generation_setting_is_named(stand_in):
    from phi3_aipc import open_session

    with open_session("transformers", model="stand-in") as session:
        with pytest.raises(BadInput, match="Unknown generation setting colour; the settings are "
                                           "max_new_tokens"):
            session.generate([{"role": "user", "content": "hi"}], colour="red")


class Counted:
    """A session's prompt budget, counted in words: what Conversation asks of a session."""

    def __init__(self, context_window: int, prompt_limit: int | None = None) -> None:
        self.context_window, self.prompt_limit = context_window, prompt_limit

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return sum(len(m["content"].split()) for m in messages)


def test_a_conversation_drops_whole_turns_to_fit_the_window_and_the_devices_limit():
    from phi3_aipc.chat import Conversation

    chat = Conversation("be brief", max_new_tokens=10)
    for n in range(3):
        messages, dropped = chat.ask(Counted(100), f"question {n}")
        chat.answered(messages, "one two three")
    assert dropped == 0 and len(chat.history) == 6
    assert messages[0] == {"role": "system", "content": "be brief"}
    # 2 + 3 (system, question) + 5 words a turn: the NPU's 10-token prompt limit keeps one turn
    messages, dropped = chat.ask(Counted(100, prompt_limit=10), "last question")
    assert dropped == 2 and chat.history[0]["content"] == "question 2"
    assert [m["content"] for m in messages] == ["be brief", "question 2", "one two three",
                                                "last question"]
    with pytest.raises(BadInput, match="context window"):  # too long even on its own
        chat.ask(Counted(12), "a prompt of many more words than the window holds")
