"""Other processes: workers that speak JSON lines, converters whose output we relay, and this
process's peak memory.

A worker (the benchmark's measurer, the NPU library's model holder) keeps its real stdout for
the protocol, one JSON object a line, and sends everything else, from Python or from C++, to
stderr. The parent reads the protocol and relays stderr through `Relay`, which keeps the last
lines for error messages. Converters (optimum-cli, the ORT GenAI builder) print hundreds of
lines; `tool_log` sends them to a file instead of the screen, for a calm `phi3-aipc demo`.

Three things hold for every child, because of Windows:
- it prints UTF-8 (`child_env`), which is how we read it: a redirected stdout on Windows is
  otherwise the ANSI code page, where a reply's emoji or CJK stop the child mid-reply;
- this process waits for it and reads its pipes in steps of `POLL_S` (`wait`, `lines`), so an
  interrupt lands within a second: Jupyter on Windows interrupts a kernel with
  `_thread.interrupt_main`, which only sets a flag that a blocking wait or pipe read never looks
  at (on Linux too: it sends no signal);
- it is tied to this process (`start`): on Windows a Job Object ends it when this process ends,
  however it ends (a kernel restarted from Jupyter is killed, not asked).
"""
from __future__ import annotations

import codecs
import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import Phi3AipcError

# Where converter output goes: None is our stderr; a path is a log file (see `tool_log`).
_TOOL_LOG: list[Path | None] = [None]
# How long a wait for a child or its output blocks at a time: an interrupt lands in between.
POLL_S = 0.2


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python: it prints UTF-8, as we read it, whatever
    the console's code page."""
    return {**os.environ, "PYTHONIOENCODING": "utf-8", **extra}


def start(cmd: list[str], **popen: object) -> subprocess.Popen:
    """subprocess.Popen, with the child tied to this process (see `_tie_to_this_process`)."""
    proc = subprocess.Popen(cmd, **popen)
    if os.name == "nt":
        _tie_to_this_process(proc)
    return proc


def wait(proc: subprocess.Popen, timeout: float | None = None) -> int:
    """proc.wait(timeout), in steps of POLL_S so that an interrupt lands between them."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
        try:
            return proc.wait(timeout=max(step, 0))
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout) from None


def end(proc: subprocess.Popen) -> None:
    """Kill a child and reap it (after an interrupt: it must not go on on its own)."""
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def own_group() -> dict:
    """Popen keywords that start a child in a process group of its own, so that `end_tree`
    (and a polite request to stop) reach it and what it starts, not this process: a new session
    on POSIX, CREATE_NEW_PROCESS_GROUP on Windows (where the child then ignores Ctrl+C and
    takes CTRL_BREAK_EVENT instead)."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def end_tree(proc: subprocess.Popen, grace: float = 0) -> int:
    """End a child started with `own_group()` and every process it started, reap it, and return
    its exit code.

    With `grace` > 0 the group is asked first (SIGTERM on POSIX; CTRL_BREAK_EVENT on Windows,
    which ends a Python process by default) and the child given that many seconds. Whatever is
    left is then killed: on POSIX the whole group (SIGKILL), on Windows the child
    (TerminateProcess, `proc.kill()`), and on both the descendants found first (psutil), which
    catches those that left the group (a Jupyter kernel starts a session of its own). On Windows
    the children the child made with `start` end with it anyway (its kill-on-close job).
    """
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:  # already gone
        family = []
    if grace > 0 and proc.poll() is None:
        if os.name == "nt":
            import signal

            with contextlib.suppress(OSError):  # no console to send it through: killed below
                proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            _signal_group(proc, "SIGTERM")
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait(proc, grace)
    if os.name != "nt":
        _signal_group(proc, "SIGKILL")
    proc.kill()  # Windows; on POSIX a child that was not a group's leader after all
    for child in family:
        with contextlib.suppress(psutil.Error):  # gone, or its pid reused (psutil checks)
            child.kill()
    return wait(proc)


def _signal_group(proc: subprocess.Popen, name: str) -> None:
    """POSIX only: send signal `name` to the process group `proc` leads (own_group); a group
    whose processes have all ended is no error."""
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, getattr(signal, name))


def communicate(proc: subprocess.Popen, timeout: float) -> tuple:
    """proc.communicate(timeout=timeout) in steps of POLL_S (retrying loses no output); an
    interrupt or the timeout kills the child."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return proc.communicate(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout) from None
    except BaseException:
        end(proc)
        raise


def lines(stream: IO[str]) -> Iterator[str]:
    """The lines of a child's output pipe, read by a thread of its own while the caller waits
    for each in steps of POLL_S. The thread holds only the stream: it ends at end of file."""
    found: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for line in stream:
                found.put(line)
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            found.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            line = found.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


def protocol_sender() -> Callable[..., None]:
    """In a worker: keep the real stdout for the protocol and send everything else that is
    printed to stderr. Returns send(**message), which writes one JSON line."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(**message) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    return send


def messages(stream: IO[str]) -> Iterator[dict]:
    """The protocol's messages from a worker's stdout (read in steps an interrupt lands
    between, see `lines`); a stray line a library printed there anyway is passed on to
    stderr."""
    for line in lines(stream):
        try:
            message = json.loads(line)
        except ValueError:
            sys.stderr.write(line)
            continue
        if isinstance(message, dict):
            yield message


class Relay:
    """Pass a child's stderr (or merged output) on, keeping its last lines for error reports.

    Runs on a thread of its own; it must not hold the object that owns the child, or that
    object could not be collected while the child runs.
    """

    def __init__(self, stream: IO, keep: int = 40, sink: IO[str] | None = None) -> None:
        self.tail: deque[str] = deque(maxlen=keep)
        log = _TOOL_LOG[-1]  # within `tool_log`, library messages go to its file too
        self.sink = sink or (open(log, "a", encoding="utf-8") if log else None)
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream: IO) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        read = getattr(stream, "read1", None)
        chunks = iter(lambda: read(4096), b"") if read else iter(stream.readline, "")
        for chunk in chunks:
            text = decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
            sink = self.sink or sys.stderr
            sink.write(text)
            sink.flush()
            *lines, pending = (pending + text).split("\n")  # whole lines only
            self.tail.extend(line.rstrip() for line in lines if line.strip())
        if pending.strip():
            self.tail.append(pending.rstrip())

    def join(self, timeout: float = 5) -> None:
        """Wait for the end of the child's output, in steps an interrupt lands between."""
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(min(POLL_S, max(deadline - time.monotonic(), 0)))

    def last_line(self) -> str:
        return next((line for line in reversed(self.tail) if line.strip()), "")

    def reason(self) -> str:
        """The exception line the child printed last, else its last line."""
        errors = [line for line in self.tail if re.match(r"[\w.]*(Error|Exception)\b.*:", line)]
        return (errors or [self.last_line()])[-1].strip()


@contextlib.contextmanager
def tool_log(path: Path | None) -> Iterator[Path | None]:
    """Within the block, converters write to the log file `path` (appending) instead of our
    stderr; None keeps them on the screen."""
    _TOOL_LOG.append(path)
    try:
        yield path
    finally:
        _TOOL_LOG.pop()


def run_tool(cmd: list[str], what: str, output: Path) -> None:
    """Run a converter (optimum-cli, the ORT GenAI builder) from this environment, relaying its
    output to our stderr (a notebook shows it; stdout stays clean for --json) or to the log
    file of `tool_log`. On failure, raise with the exception line it printed."""
    env = child_env(PYTHONWARNINGS="ignore")  # tracer warnings scare more than inform
    if cmd[0] == "python":
        program = sys.executable
    else:  # a console script of this environment (optimum-cli, or optimum-cli.exe)
        program = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or cmd[0]
    log_path = _TOOL_LOG[-1]
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    try:
        try:
            proc = start([program, *cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env)
        except OSError as err:
            raise Phi3AipcError(f"{what} could not start {cmd[0]}: {err}. Is the route "
                                "installed in this environment?") from None
        if log:
            log.write(f"$ {' '.join(cmd)}\n")
        relay = Relay(proc.stdout, sink=log)
        try:
            code = wait(proc)
        except BaseException:  # interrupted: the converter must not go on writing on its own
            end(proc)
            raise
        relay.join(timeout=30)
    finally:
        if log:
            log.close()
    if code != 0:
        shown = " ".join("<output>" if arg == str(output) else arg for arg in cmd)
        where = f" (its output: {log_path})" if log_path else ""
        raise Phi3AipcError(f"{what} failed: {relay.reason() or f'exit code {code}'} "
                            f"Command: {shown}{where}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    On Linux this is VmHWM: getrusage's ru_maxrss would carry over the peak of the parent a
    worker process was forked from.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 1024 / 1024


# Windows: a Job Object that ends every child `start` made when this process ends. The job's
# handle is never closed by us: Windows closes it when this process ends, however it ends, and
# JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE then ends the children. Not executed outside Windows.
_JOB: list[int | None] = []
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9  # JOBOBJECTINFOCLASS
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
PROCESS_SET_QUOTA, PROCESS_TERMINATE = 0x0100, 0x0001


def _job_structures():
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION as ctypes declares it, with fixed-size fields (DWORD
    is 32 bits on Windows; ctypes.wintypes.DWORD is a C long, 64 bits on Linux) so that its
    layout can be checked anywhere: 144 bytes on 64-bit Windows."""
    import ctypes

    class Basic(ctypes.Structure):  # JOBOBJECT_BASIC_LIMIT_INFORMATION
        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                    ("PerJobUserTimeLimit", ctypes.c_int64),
                    ("LimitFlags", ctypes.c_uint32),
                    ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t),
                    ("ActiveProcessLimit", ctypes.c_uint32),
                    ("Affinity", ctypes.c_size_t),  # ULONG_PTR
                    ("PriorityClass", ctypes.c_uint32),
                    ("SchedulingClass", ctypes.c_uint32)]

    class IoCounters(ctypes.Structure):  # IO_COUNTERS
        _fields_ = [(name, ctypes.c_uint64) for name in (
            "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
            "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]

    class Extended(ctypes.Structure):  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
        _fields_ = [("BasicLimitInformation", Basic), ("IoInfo", IoCounters),
                    ("ProcessMemoryLimit", ctypes.c_size_t),
                    ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t),
                    ("PeakJobMemoryUsed", ctypes.c_size_t)]

    return Extended


def _kill_on_close_job() -> int | None:
    """This process's job (made once): its children end when it ends. None if Windows refused."""
    if _JOB:
        return _JOB[0]
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    kernel32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int,
                                                 ctypes.c_void_p, ctypes.c_uint32]
    kernel32.SetInformationJobObject.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    job = kernel32.CreateJobObjectW(None, None)
    if job:
        info = _job_structures()()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not kernel32.SetInformationJobObject(job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                                ctypes.byref(info), ctypes.sizeof(info)):
            kernel32.CloseHandle(job)
            job = None
    _JOB.append(job or None)
    return _JOB[0]


def _tie_to_this_process(proc: subprocess.Popen) -> None:
    """Put a child in this process's kill-on-close job (Windows only). Best effort: where
    Windows refuses (a job that forbids it), the child is still ended by `end` after an
    interrupt, only not when this process is killed. A grandchild the child started before
    this call (within its first milliseconds) is not in the job."""
    import ctypes
    from ctypes import wintypes

    job = _kill_on_close_job()
    if job is None:
        return
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = [ctypes.c_uint32, wintypes.BOOL, ctypes.c_uint32]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
    kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    # The pid cannot be reused meanwhile: Popen holds a handle to the process.
    handle = kernel32.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, proc.pid)
    if handle:
        kernel32.AssignProcessToJobObject(job, handle)
        kernel32.CloseHandle(handle)
