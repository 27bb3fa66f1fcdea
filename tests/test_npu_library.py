"""The NPU-library route: the archived library, in its own environment, one worker per model.

Here there is no NPU, so the library compiles for the CPU; the route must say so, give the
reference's tokens on the fixed chats, and never take the test process down with it.
"""
import os
import signal
import sys

import pytest

from phi3_aipc import open_session
from phi3_aipc.envs import npu_library_python
from phi3_aipc.errors import Phi3AipcError
from phi3_aipc.routes import get_route
from phi3_aipc.standin import load_chats

from .conftest import run_cli

if os.environ.get("PHI3_AIPC_SKIP_NPU") or sys.platform == "darwin":
    pytest.skip("no NPU-library environment (PHI3_AIPC_SKIP_NPU, or macOS)",
                allow_module_level=True)
CHATS = load_chats()


@pytest.fixture(scope="module")
def reference(stand_in):
    session = open_session("transformers", model="stand-in")
    return [session.generate(chat["messages"], greedy=True).token_ids for chat in CHATS]


def test_the_setup_installed_it():
    assert npu_library_python() is not None, "scripts/bootstrap.py should have built .venv-npu"
    assert get_route("npu-library").is_installed()


@pytest.mark.slow
def test_int4_int8_int4_fp16_in_one_process(reference):
    """The library alone aborts on the second model with the same shapes; workers don't."""
    for precision in ("int4", "int8", "int4", "fp16"):
        session = open_session("npu-library", precision, model="stand-in")
        assert session.device == "CPU (no NPU)"
        assert "compiled the model for the CPU" in session.device_note
        for chat, want in zip(CHATS, reference):
            result = session.generate(chat["messages"], greedy=True)
            assert result.token_ids == want, precision
            assert result.text == chat["reply"] and result.finish_reason == "stop"
        session.close()
    # Reaching this line is the point: the test process survived all four models.


def test_sessions_side_by_side_and_streaming(stand_in):
    int8 = open_session("npu-library", "int8", model="stand-in")
    fp16 = open_session("npu-library", "fp16", model="stand-in")
    pieces = []
    result = int8.generate(CHATS[2]["messages"], greedy=True, streamer=pieces.append)
    assert "".join(pieces) == result.text == CHATS[2]["reply"]
    assert fp16.generate(CHATS[2]["messages"], greedy=True).text == CHATS[2]["reply"]
    assert result.metrics.ttft_ms > 0 and result.metrics.load_s > 0


def test_a_worker_that_dies_is_an_error_not_a_crash(stand_in):
    session = open_session("npu-library", "int4", model="stand-in")
    if os.name != "nt":
        os.kill(session.proc.pid, signal.SIGABRT)  # as the library dies when it aborts
        how = "was killed by SIGABRT"
    else:  # Windows has no death by a signal: os.kill would be TerminateProcess too
        session.proc.kill()
        how = "exited with code 1"
    session.proc.wait()
    with pytest.raises(Phi3AipcError, match=f"worker process {how}"):
        session.generate(CHATS[0]["messages"], greedy=True)


def test_bad_input_comes_back_as_a_clear_error(stand_in):
    session = open_session("npu-library", "int8", model="stand-in")
    with pytest.raises(Phi3AipcError, match="context window is 4096"):
        session.generate([{"role": "user", "content": "word " * 5000}])
    assert session.generate(CHATS[1]["messages"], greedy=True).text == CHATS[1]["reply"]


def test_cli_and_no_files_in_the_working_folder(stand_in):
    out = run_cli("generate", "--backend", "npu-library", "--precision", "int8", "--model",
                  "stand-in", "--greedy", "--prompt", CHATS[2]["messages"][-1]["content"])
    assert out.returncode == 0, out.stderr
    assert "[npu-library | CPU (no NPU) | int8 | stand-in]" in out.stdout
    assert CHATS[2]["reply"] in out.stdout
    assert not any(os.path.exists(name) for name in ("cache", "nc_workspace"))


def test_unknown_precision_for_the_library():
    out = run_cli("generate", "--backend", "npu-library", "--precision", "fp32", "--model",
                  "stand-in", "--prompt", "hi")
    assert out.returncode == 2
    assert "offers precisions int4, int8, fp16; got 'fp32'" in out.stderr


def test_a_dropped_session_stops_its_worker(stand_in):
    import gc

    session = open_session("npu-library", "int8", model="stand-in")
    proc = session.proc
    del session
    gc.collect()
    assert proc.wait(timeout=30) is not None


def test_the_worker_reports_its_own_memory(stand_in):
    from phi3_aipc.processes import peak_rss_mb

    ballast = bytearray(1500 * 2**20)  # this process now peaks far above the worker
    ballast[::4096] = b"x" * len(ballast[::4096])
    session = open_session("npu-library", "int8", model="stand-in")
    worker_peak = session.generate(CHATS[2]["messages"], greedy=True).metrics.peak_rss_mb
    assert 0 < worker_peak < peak_rss_mb() - 300


def test_a_model_that_cannot_fit_is_refused_before_any_worker(stand_in, monkeypatch):
    """The library holds the whole checkpoint in fp32 before it quantizes: the route checks
    that first, instead of a worker being killed for want of memory."""
    import psutil

    from phi3_aipc.errors import InsufficientResources

    class Tight:
        available = 10_000_000  # 10 MB: the stand-in in fp32 needs more
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight())
    with pytest.raises(InsufficientResources, match="loads stand-in in fp32 before it quantizes"):
        open_session("npu-library", "int4", model="stand-in")


# A compiled model kept in the cache is data from whoever made the cache (a workshop's USB
# stick): it is stored in safetensors, sealed, and nothing in it can run code.
PLANT = """
import sys
from intel_npu_acceleration_library import int4
from intel_npu_acceleration_library.modelling import get_model_path
print(get_model_path(sys.argv[1], int4, False, use_cache=True)[1])
"""


def evil_pickle(path, marker, raw=False):
    """A file that creates `marker` when torch.load()s it with the weights-only guard off,
    as the library's own cache loader did; `raw`: a bare pickle, which pickle.load() runs too
    (and torch.load() without the guard, as it reads the legacy format's first pickle)."""
    import pickle

    import torch

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw:
        path.write_bytes(pickle.dumps(Evil()))
    else:
        torch.save(Evil(), path)


@pytest.mark.slow
def test_compiled_models_are_data_checked_before_use(stand_in, tmp_path, monkeypatch, reference):
    import subprocess

    from phi3_aipc.cache import check_sealed, seal
    from phi3_aipc.routes.npu_library import worker_folder

    from .test_artifacts import change_keeping_times

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    marker = tmp_path / "code-ran"
    folder = worker_folder(stand_in)
    # Where the library's own (pickled) cache would be read from, a planted pickle.
    planted = subprocess.run([npu_library_python(), "-c", PLANT, str(stand_in)], cwd=folder,
                             capture_output=True, text=True, check=True).stdout.strip()
    evil_pickle(folder / planted, marker)

    def tokens():
        session = open_session("npu-library", "int4", model=str(stand_in))
        ids = session.generate(CHATS[0]["messages"], greedy=True).token_ids
        session.relay.join(0.5)
        log = "\n".join(session.relay.tail)
        session.close()
        return ids, log

    ids, log = tokens()  # compiled, and saved
    assert ids == reference[0] and "Compiling " in log
    compiled = folder / "compiled-int4"
    assert check_sealed(compiled) is None
    assert sorted(p.name for p in compiled.iterdir()) == [
        "compiled.json", "compiled.safetensors", "phi3-aipc.json"]
    ids, log = tokens()  # loaded from the safetensors: same tokens, no compiling
    assert ids == reference[0] and "Compiling " not in log

    change_keeping_times(compiled / "compiled.safetensors")  # same size, time set back
    ids, log = tokens()
    assert "is damaged (compiled.safetensors changed since it was made): building it" in log
    assert ids == reference[0] and "Compiling " in log

    evil_pickle(compiled / "compiled.safetensors", marker)  # a pickle in its place
    ids, log = tokens()
    assert "is damaged" in log and ids == reference[0]
    assert not marker.exists(), "a file from the cache ran code"

    # Whoever hands out a cache can write its manifest too: the pickle, sealed again (sizes,
    # times, sha256, as cache.py does), passes the check. compiled.json is left sound, so the
    # loader gets as far as the tensors: it reads them as safetensors only, and refuses.
    evil_pickle(compiled / "compiled.safetensors", marker, raw=True)
    seal(compiled)
    assert check_sealed(compiled) is None  # the seal no longer stands in the way
    ids, log = tokens()
    assert not marker.exists(), "the loader unpickled a file from the cache"
    assert "is damaged" not in log
    assert "cannot be used (SafetensorError: Error while deserializing header" in log, log
    assert "compiling again." in log and "Compiling " in log
    assert ids == reference[0]
    assert check_sealed(compiled) is None  # compiled again, and sealed
    assert (compiled / "compiled.safetensors").read_bytes()[8:9] == b"{"  # safetensors again
    assert list(tmp_path.rglob("*.pt")) == [folder / planted]  # the planted one: none written


@pytest.mark.slow
def test_a_worker_killed_while_compiling_leaves_no_finished_folder(stand_in, tmp_path):
    import subprocess
    import time

    from phi3_aipc.processes import end_tree, own_group

    from .portable import cli

    env = {**os.environ, "PHI3_AIPC_CACHE": str(tmp_path)}
    proc = subprocess.Popen([cli(), "generate", "--backend", "npu-library", "--model",
                             str(stand_in), "--prompt", "hi"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **own_group())
    deadline = time.time() + 300
    while not list(tmp_path.glob("npu-library/*/.compiled-int4.tmp-*")):
        assert time.time() < deadline and proc.poll() is None, "compiling never started"
        time.sleep(0.05)
    end_tree(proc)  # the CLI and its worker, at once
    assert not list(tmp_path.glob("npu-library/*/compiled-int4"))  # nothing looks finished
    out = run_cli("generate", "--backend", "npu-library", "--model", str(stand_in), "--greedy",
                  "--prompt", CHATS[2]["messages"][-1]["content"],
                  env={"PHI3_AIPC_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert CHATS[2]["reply"] in out.stdout
    assert not list(tmp_path.glob("npu-library/*/.compiled-int4.tmp-*"))
    assert list(tmp_path.glob("npu-library/*/compiled-int4/compiled.safetensors"))
