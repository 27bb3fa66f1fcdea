"""The notebook kernel survives what the command line survives.

Learners call `open_session` and `generate` in a Jupyter kernel, where a crash loses all they
have loaded. The same kind of generated bad input as tests/test_fuzz.py goes through both,
inside a real kernel: each call gives a result or a Phi3AipcError, and the kernel still answers
afterwards.
"""
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("jupyter_client")

IN_THE_KERNEL = r"""
import sys
sys.path.insert(0, ROOT)
from tests.strategies import json_values, numbers
from hypothesis import HealthCheck, example, given, settings, strategies as st
from phi3_aipc import open_session
from phi3_aipc.errors import Phi3AipcError

chats = json_values | st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]),
     "content": st.text(max_size=40) | json_values}), max_size=3)
settings_ = st.dictionaries(
    st.sampled_from(["max_new_tokens", "greedy", "temperature", "top_p", "seed", "ignore_eos",
                     "beams", ""]),
    numbers | st.booleans() | st.none(), max_size=4)
outcomes = {"result": 0, "refused": 0}
sessions = {name: open_session(name, model="stand-in")
            for name in ("transformers", "openvino", "onnxruntime-genai")}
RUN = settings(max_examples=MAX, database=None, deadline=None,
               suppress_health_check=list(HealthCheck))


@RUN
@given(route=st.sampled_from(sorted(sessions)), messages=chats, kwargs=settings_)
@example(route="openvino", messages=[{"role": "user", "content": "hi"}],
         kwargs={"max_new_tokens": 2, "top_p": 0.5})
def generate_anything(route, messages, kwargs):
    if isinstance(kwargs.get("max_new_tokens"), int) and kwargs["max_new_tokens"] > 8:
        kwargs["max_new_tokens"] = 8  # stays quick; values over the window are tested apart
    try:
        sessions[route].generate(messages, **kwargs)
        outcomes["result"] += 1
    except Phi3AipcError:
        outcomes["refused"] += 1


@RUN
@given(route=st.sampled_from(["transformers", "openvino", "npu-library", "llama", ""]),
       precision=st.sampled_from(["int4", "int8", "fp32", "int3", None]) | st.text(max_size=6),
       device=st.sampled_from(["cpu", "NPU", "GPU.1", "", None]) | st.text(max_size=6),
       model=st.sampled_from(["./no/such", "nobody/nothing", ""]) | st.text(max_size=10),
       options=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=2))
def open_anything(route, precision, device, model, options):
    try:
        open_session(route, precision, device, model, prepare_options=options).close()
        outcomes["result"] += 1
    except Phi3AipcError:
        outcomes["refused"] += 1


generate_anything()
open_anything()
print("outcomes", outcomes["result"], outcomes["refused"])
"""


def test_the_kernel_survives_generated_bad_input(stand_in):
    from hypothesis import settings
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        printed, errors = [], []

        def collect(message):
            content = message["content"]
            if message["msg_type"] == "stream":
                printed.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))
        code = IN_THE_KERNEL.replace("MAX", str(min(settings().max_examples, 40))).replace(
            "ROOT", repr(str(Path(__file__).parents[1])))
        reply = client.execute_interactive(code, timeout=900, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(errors)[-3000:]
        results, refused = map(int, "".join(printed).split("outcomes")[1].split()[:2])
        assert results >= 1 and refused >= 10, (results, refused)
        assert manager.is_alive()
        printed.clear()
        reply = client.execute_interactive("print(6 * 7, len(sessions))", timeout=60,
                                           output_hook=collect)
        assert reply["content"]["status"] == "ok" and "42 3" in "".join(printed)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
