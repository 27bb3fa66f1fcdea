"""Sampling, the CLI's default, on every route: a seed repeats, different seeds differ, a sample
is not the greedy reply, and temperature and top-p do what they say. A route that fell back to
greedy, ignored its seed or dropped a setting fails here.

The unseen prompt is one where the stand-in's top two logits are close (about 0.3 apart), so at
temperature 1.5 a 24-token sample that equals the greedy one, or another seed's, is next to
impossible. On a memorized chat the gaps are 5.5 or more: temperature 0.01 keeps any route
greedy there, and temperature 100 (nearly uniform) makes none, which is what catches a route
that ignores its temperature (at 1.0 it would still give the greedy reply there).

An intermediate top-p is checked token by token against the route's own next-token
probabilities for each prefix (transformers': fp32), read with its `logits`. At top_p 0.5 and
temperature 1 (2026-12-07), where a route applies top-p none of its 48 sampled tokens left the
nucleus (the tokens likelier than a sampled one held at most 0.36); with top-p ignored, 3 to 9
of the 48 did (the likelier ones holding up to 0.98).
"""

import numpy as np
import pytest

from phi3_aipc import open_session
from phi3_aipc.chat import build_messages
from phi3_aipc.quality import log_softmax
from phi3_aipc.standin import load_chats

from .conftest import NPU_SKIPPED

ROUTES = [("transformers", "fp32"), ("openvino", "int4"), ("onnxruntime-genai", "int4"),
          *([] if NPU_SKIPPED else [("npu-library", "int4")])]
UNSEEN = build_messages("Tell me a story about a lighthouse.")
CHAT = load_chats()[0]
N = 24


@pytest.fixture(scope="module", params=ROUTES, ids=[r for r, _ in ROUTES])
def session(request, stand_in):
    route, precision = request.param
    with open_session(route, precision, model="stand-in", progress=False) as session:
        yield session


def ids(session, messages=UNSEEN, **settings):
    return session.generate(messages, max_new_tokens=N, ignore_eos=True, **settings).token_ids


def test_a_seed_repeats_and_another_seed_differs(session):
    first = ids(session, seed=3, temperature=1.5, top_p=1.0)
    assert ids(session, seed=3, temperature=1.5, top_p=1.0) == first
    assert ids(session, seed=4, temperature=1.5, top_p=1.0) != first


def test_a_sample_is_not_the_greedy_reply(session):
    assert ids(session, seed=3, temperature=1.5, top_p=1.0) != ids(session, greedy=True)


def test_a_tiny_top_p_leaves_only_the_likeliest_token(session):
    assert ids(session, seed=3, temperature=1.5, top_p=1e-6) == ids(session, greedy=True)


def test_temperature_sharpens_and_flattens(session):
    greedy = ids(session, CHAT["messages"], greedy=True)
    assert ids(session, CHAT["messages"], seed=3, temperature=0.01, top_p=1.0) == greedy
    assert ids(session, CHAT["messages"], seed=3, temperature=100.0, top_p=1.0) != greedy


def test_an_intermediate_top_p_samples_only_from_the_nucleus(session):
    """At top_p 0.5 each sampled token is in the nucleus: the smallest set of likeliest tokens
    whose probabilities sum to at least 0.5, so the tokens likelier than it hold less than 0.5
    (within 0.01: a route's logits are not computed exactly as its sampler's)."""
    prompt = session.prompt_ids(UNSEEN)
    for seed in (3, 4):
        sample = ids(session, seed=seed, temperature=1.0, top_p=0.5)
        logits = np.asarray(session.logits(prompt + sample), dtype=np.float32)
        probs = np.exp(log_softmax(logits[len(prompt) - 1:-1]))  # the next token's, per prefix
        likelier = [float(p[p > p[token]].sum()) for p, token in zip(probs, sample)]
        outside = [round(m, 3) for m in likelier if m >= 0.5 + 0.01]
        assert not outside, f"seed {seed}: {len(outside)} of {N} outside, {outside}"
