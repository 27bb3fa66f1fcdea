"""An interrupt lands within a second, and leaves no child running.

Jupyter on Windows interrupts a kernel with `_thread.interrupt_main`, which sends no signal: it
sets a flag that the main thread sees only between two steps of Python. A blocking
`proc.wait()` or pipe read in the main thread never looks at it, and the same holds on Linux,
so these tests interrupt the same way here. Each child sleeps 30 s: a wait that does not poll
would hold the interrupt that long.
"""
import _thread
import importlib
import signal
import subprocess
import sys
import threading
import time
import types
import warnings
from contextlib import contextmanager

import psutil
import pytest

from phi3_aipc.processes import messages, run_tool

SLEEPER = "import time; time.sleep(30)"
BOUND_S = 2.0  # the interrupt comes after 0.3 s; polling steps are 0.2 s


@pytest.fixture
def sleeping_workers(monkeypatch):
    """The benchmark's and the NPU library's worker processes replaced by a sleeper."""
    class Popen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            if any("phi3_aipc.bench.worker" in a or "npu_worker" in a for a in map(str, args)):
                args = [sys.executable, "-c", SLEEPER]
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Popen)


class Interrupt:
    """An interrupt_main from a timer, AFTER_S after `fire()`; `took` is the time from the
    interrupt to the KeyboardInterrupt."""
    AFTER_S = 0.3

    def __init__(self) -> None:
        self.timer = threading.Timer(self.AFTER_S, _thread.interrupt_main)
        self.at = None
        self.took = None

    def fire(self) -> None:
        if self.at is None:
            self.at = time.monotonic() + self.AFTER_S
            self.timer.start()


@contextmanager
def interrupted(now: bool = True):
    """Within the block, an interrupt (fired at once, or by the block); afterwards, children
    started within the block must be gone."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    # A kernel runs each cell with Python's own SIGINT handler (ipykernel's kernelbase sets
    # default_int_handler around every request); interrupt_main calls whatever handler is there
    # (nothing under SIG_IGN or SIG_DFL). A test run earlier in the worker may have left another
    # (conftest names the test that did): say which.
    handler = signal.getsignal(signal.SIGINT)
    if handler is not signal.default_int_handler:
        warnings.warn(f"SIGINT's handler was {handler!r} before this test; set to Python's "
                      "default for it, as in a kernel", stacklevel=3)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = Interrupt()
    if now:
        interrupt.fire()
    try:
        with pytest.raises(KeyboardInterrupt):
            yield interrupt
    finally:
        interrupt.timer.cancel()
        if interrupt.at is not None:
            interrupt.timer.join()
        signal.signal(signal.SIGINT, handler if handler is not None else signal.default_int_handler)
    interrupt.took = time.monotonic() - interrupt.at
    time.sleep(0.1)
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"children still running after the interrupt: {left}"


def test_an_interrupt_stops_a_converter_within_a_second(tmp_path):
    with interrupted() as interrupt:
        run_tool(["python", "-c", SLEEPER], "The sleeping tool", tmp_path)
    assert interrupt.took < BOUND_S, f"the interrupt landed after {interrupt.took:.1f} s"


def test_an_interrupt_stops_a_wait_for_a_workers_messages():
    """The pipe read of the NPU library's session and the benchmark (`messages`)."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True)
    try:
        with interrupted() as interrupt:
            for _ in messages(proc.stdout):
                pass
    finally:
        proc.kill()
        proc.wait()
    assert interrupt.took < BOUND_S, f"the interrupt landed after {interrupt.took:.1f} s"


def test_an_interrupted_benchmark_worker_is_killed(sleeping_workers):
    run = importlib.import_module("phi3_aipc.bench.run")  # the package's `run` is a function

    with interrupted() as interrupt:
        run.run_worker({}, lambda event: None)
    assert interrupt.took < BOUND_S, f"the interrupt landed after {interrupt.took:.1f} s"


def test_an_interrupted_npu_library_load_kills_its_worker(stand_in, monkeypatch, tmp_path,
                                                         sleeping_workers):
    """Interrupted while the worker compiles (here: sleeps), the session's start ends it."""
    from phi3_aipc.routes import npu_library
    from phi3_aipc.routes.plan import Plan

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    monkeypatch.setattr(npu_library, "npu_library_python", lambda: sys.executable)

    class Loaded:  # transformers' tokenizer and config: importing them takes 10 s here
        max_position_embeddings = 4096

        @classmethod
        def from_pretrained(cls, folder):
            return cls()

    monkeypatch.setitem(sys.modules, "transformers",
                        types.SimpleNamespace(AutoTokenizer=Loaded, AutoConfig=Loaded))
    waits = npu_library.NPULibrarySession._next_event
    with interrupted(now=False) as interrupt:  # once it waits for the worker's "ready"
        monkeypatch.setattr(npu_library.NPULibrarySession, "_next_event",
                            lambda self: interrupt.fire() or waits(self))
        npu_library.NPULibrarySession(Plan("npu-library", "int4", "npu"), stand_in, "stand-in")
    assert interrupt.took < BOUND_S, f"the interrupt landed after {interrupt.took:.1f} s"


def test_the_job_object_structure_has_windows_layout():
    """The Job Object code runs only on Windows; its structure's layout is checked here:
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION is 144 bytes on 64-bit Windows, LimitFlags at 16."""
    import ctypes

    from phi3_aipc.processes import _job_structures

    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the layout checked is the 64-bit one")
    extended = _job_structures()
    basic = extended._fields_[0][1]
    assert ctypes.sizeof(extended) == 144 and ctypes.sizeof(basic) == 64
    assert basic.LimitFlags.offset == 16 and extended.ProcessMemoryLimit.offset == 112
