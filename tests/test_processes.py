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


FAMILY = ("import subprocess, sys, time\n"
          "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
          "print(child.pid, flush=True)\n"
          "time.sleep(60)\n")


@pytest.mark.parametrize("grace", [0, 5])
def test_end_tree_ends_a_child_and_what_it_started(grace):
    """On every platform: a group of its own (own_group), then the child and its child ended,
    at once or after being asked."""
    import psutil

    from phi3_aipc.processes import end_tree, own_group

    proc = subprocess.Popen([sys.executable, "-c", FAMILY], stdout=subprocess.PIPE, text=True,
                            **own_group())
    grandchild = psutil.Process(int(proc.stdout.readline()))
    code = end_tree(proc, grace=grace)
    assert code != 0 and proc.poll() is not None
    assert ended(grandchild)
    assert end_tree(proc) == code  # again: nothing left, no error


def ended(process, timeout: float = 10) -> bool:
    """Whether a process (not our child) ends within `timeout`: gone, or a zombie that only
    waits to be reaped by whoever adopted it (which can take seconds in a container)."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
