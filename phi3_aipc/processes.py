"""Other processes: workers that speak JSON lines, converters whose output we relay, and this
process's peak memory.

A worker (the benchmark's measurer, the NPU library's model holder) keeps its real stdout for
the protocol, one JSON object a line, and sends everything else, from Python or from C++, to
stderr. The parent reads the protocol and relays stderr through `Relay`, which keeps the last
lines for error messages. Converters (optimum-cli, the ORT GenAI builder) print hundreds of
lines; `tool_log` sends them to a file instead of the screen, for a calm `phi3-aipc demo`.
"""
from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import Phi3AipcError

# Where converter output goes: None is our stderr; a path is a log file (see `tool_log`).
_TOOL_LOG: list[Path | None] = [None]


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
    """The protocol's messages from a worker's stdout; a stray line a library printed there
    anyway is passed on to stderr."""
    for line in stream:
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
        self.thread.join(timeout)

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
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # tracer warnings scare more than inform
    if cmd[0] == "python":
        program = sys.executable
    else:  # a console script of this environment (optimum-cli, or optimum-cli.exe)
        program = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or cmd[0]
    log_path = _TOOL_LOG[-1]
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    try:
        try:
            proc = subprocess.Popen([program, *cmd[1:]], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env)
        except OSError as err:
            raise Phi3AipcError(f"{what} could not start {cmd[0]}: {err}. Is the route "
                                "installed in this environment?") from None
        if log:
            log.write(f"$ {' '.join(cmd)}\n")
        relay = Relay(proc.stdout, sink=log)
        try:
            code = proc.wait()
        except BaseException:  # interrupted: the converter must not go on writing on its own
            proc.kill()
            proc.wait()
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
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 1024 / 1024
