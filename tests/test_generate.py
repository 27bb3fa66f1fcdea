"""`generate` on the transformers reference: memorized replies, stop tokens, exact lengths."""
import json

import pytest

from phi3_aipc import DeviceUnavailable, build_messages, installed_routes, open_session
from phi3_aipc.chat import prompt_ids
from phi3_aipc.standin import load_chats

from .conftest import run_cli

CHATS = load_chats()
CONTRACT_KEYS = {"backend", "device", "precision", "model", "text", "token_ids",
                 "finish_reason", "prompt_tokens", "metrics"}
METRIC_KEYS = {"load_s", "ttft_ms", "tpot_ms", "tokens_per_s", "peak_rss_mb"}


def session_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def session(stand_in):
    return open_session("transformers", model="stand-in", progress=False)


@pytest.mark.parametrize("chat", CHATS, ids=[c["messages"][-1]["content"] for c in CHATS])
def test_fixed_chats_give_their_stored_reply_and_stop(session, chat):
    result = session.generate(chat["messages"], greedy=True, max_new_tokens=100)
    assert result.text == chat["reply"]
    assert result.finish_reason == "stop"
    assert 32007 not in result.token_ids
    assert session.tokenizer.decode(result.token_ids) == chat["reply"]


def test_streamed_pieces_make_the_text(session):
    pieces = []
    result = session.generate(CHATS[0]["messages"], greedy=True, streamer=pieces.append)
    assert len(pieces) > 5
    assert "".join(pieces) == result.text


def test_ignore_eos_gives_exactly_n_tokens(session):
    result = session.generate(CHATS[2]["messages"], greedy=True, ignore_eos=True,
                              max_new_tokens=40)
    assert len(result.token_ids) == 40
    assert result.finish_reason == "length"
    assert 32007 in result.token_ids  # it went past the stop token


def test_metrics_are_measured(session):
    m = session.generate(CHATS[1]["messages"], greedy=True).metrics
    assert m.ttft_ms > 0 and m.tpot_ms > 0 and m.peak_rss_mb > 100
    assert m.tokens_per_s == pytest.approx(1000 / m.tpot_ms)


def test_cli_json_contract_and_repeatability(stand_in):
    args = ["generate", "--backend", "transformers", "--model", "stand-in", "--greedy", "--json",
            "--prompt", "Tell me a story about a lighthouse.", "--max-new-tokens", "24",
            "--ignore-eos"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert CONTRACT_KEYS <= a.keys() and METRIC_KEYS <= a["metrics"].keys()
    assert (a["backend"], a["device"], a["precision"], a["model"]) == (
        "transformers", "cpu", "fp32", "stand-in")
    assert len(a["token_ids"]) == 24 and a["finish_reason"] == "length"
    assert a["token_ids"] == b["token_ids"]
    lighthouse = build_messages("Tell me a story about a lighthouse.")
    assert a["prompt_tokens"] == len(prompt_ids(session_tokenizer(stand_in), lighthouse))


def test_cli_text_output_streams_reply_and_metrics(stand_in):
    chat = CHATS[0]
    out = run_cli("generate", "--model", "stand-in", "--greedy",
                  "--system", chat["messages"][0]["content"],
                  "--prompt", chat["messages"][1]["content"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[transformers | cpu | fp32 | stand-in]\n" + chat["reply"])
    assert "TTFT" in out.stdout and "tokens/s" in out.stdout


def test_prepare_prints_the_artifact_folder_last(stand_in):
    out = run_cli("prepare", "--backend", "transformers", "--model", "stand-in")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(stand_in)


def test_demo_runs_every_installed_route(stand_in):
    out = run_cli("demo", "--model", "stand-in")
    assert out.returncode == 0, out.stderr
    routes = [b.name for b in installed_routes()]
    assert f"routes installed: {', '.join(routes)}" in out.stdout
    for i, name in enumerate(routes, 1):
        assert f"[{i}/{len(routes)}] {name}: preparing, loading and generating ... done" \
            in out.stdout
    table = out.stdout[out.stdout.index("| route | device | precision | reply |"):]
    rows = [line.split(" | ") for line in table.splitlines()[2:] if line.startswith("| ")]
    assert [row[0].strip("| ") for row in rows] == routes
    assert all(row[3] == CHATS[0]["reply"] for row in rows)
    assert "| transformers | cpu | fp32 |" in table
    log = out.stdout.split("library messages go to ")[1].split(" (--verbose")[0]
    assert log.endswith(".log")


def test_fp32_reference_refuses_a_model_that_cannot_fit(stand_in, monkeypatch):
    import psutil

    class Tight:
        available = 1000
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight())
    with pytest.raises(DeviceUnavailable, match="GB is free"):
        open_session("transformers", model="stand-in")
