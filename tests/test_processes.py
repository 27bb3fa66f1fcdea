"""The plumbing shared by every process we start: converters' output relayed or kept in a log,
and the JSON-lines protocol of workers."""
import subprocess
import sys

import pytest

from phi3_aipc.errors import Phi3AipcError
from phi3_aipc.processes import Relay, messages, run_tool, tool_log

CHATTY = "import sys; print('INFO:nncf chatter'); print('more', file=sys.stderr)"
FAILING = CHATTY + "; raise ValueError('the real reason')"


def test_converter_output_goes_to_the_log_not_the_screen(tmp_path, capfd):
    log = tmp_path / "demo.log"
    with tool_log(log):
        run_tool(["python", "-c", CHATTY], "The chatty tool", tmp_path)
    assert "INFO:nncf chatter" in log.read_text() and "more" in log.read_text()
    assert "chatter" not in capfd.readouterr().err
    run_tool(["python", "-c", CHATTY], "The chatty tool", tmp_path)  # no log: on the screen
    assert "INFO:nncf chatter" in capfd.readouterr().err


def test_a_failing_converter_names_its_reason_and_its_log(tmp_path):
    log = tmp_path / "demo.log"
    with tool_log(log), pytest.raises(Phi3AipcError) as err:
        run_tool(["python", "-c", FAILING], "The failing tool", tmp_path)
    assert "The failing tool failed: ValueError: the real reason" in str(err.value)
    assert str(log) in str(err.value)


def test_protocol_lines_and_stray_prints(capfd):
    script = ("from phi3_aipc.processes import protocol_sender\n"
              "send = protocol_sender()\n"
              "print('a library talking')\n"
              "send(event='ready')\n"
              "send(result=42)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    relay = Relay(proc.stderr)
    got = list(messages(proc.stdout))
    proc.wait()
    relay.join()
    assert got == [{"event": "ready"}, {"result": 42}]
    assert "a library talking" in relay.tail
