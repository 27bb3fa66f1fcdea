"""Files in use, as Windows has them: a folder with an open or memory-mapped file, or that is a
process's current folder, cannot be renamed or removed (WinError 5, access denied; 32, sharing
violation), and an antivirus scanner briefly holds fresh files.

Linux lets all of these through, so doubles of `os.replace` raise what Windows raises: a
PermissionError whose `winerror` is set (Python sets it only on Windows).
"""
import gc
import json
import os
import sys
import weakref
from pathlib import Path

import pytest
from filelock import FileLock

from phi3_aipc import cache
from phi3_aipc.cache import build_once, check_sealed
from phi3_aipc.cli import main
from phi3_aipc.errors import Phi3AipcError


def access_denied(winerror: int = 5) -> PermissionError:
    err = PermissionError(13, "Access is denied" if winerror == 5 else
                          "The process cannot access the file because it is being used by "
                          "another process")
    err.winerror = winerror
    return err


@pytest.fixture
def windows_renames(monkeypatch):
    """`refuse(predicate, times=None, winerror=5)`: os.replace refuses renames whose source
    matches, `times` times (None: always), as Windows does; the retries are kept short."""
    real = os.replace
    refusals = []

    def refuse(predicate, times=None, winerror=5):
        def replace(src, dst, *args, **kwargs):
            if predicate(Path(src)) and (times is None or len(refusals) < times):
                refusals.append(Path(src))
                raise access_denied(winerror)
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        return refusals

    monkeypatch.setattr(cache, "RETRY_S", 0.3, raising=False)
    return refuse


def two_files(folder: Path) -> None:
    (folder / "weights.bin").write_bytes(b"\1" * 1000)
    (folder / "config.json").write_text("{}", encoding="utf-8")


def is_build(path: Path) -> bool:
    return ".tmp-" in path.name and path.is_dir()


def test_a_rename_refused_for_a_moment_is_tried_again(tmp_path, windows_renames):
    """A scanner holding the fresh files: the rename into place succeeds on the third try."""
    refusals = windows_renames(is_build, times=2)
    built = []
    final = build_once(tmp_path / "artifact", lambda tmp: built.append(two_files(tmp)))
    assert len(refusals) == 2 and len(built) == 1
    assert check_sealed(final) is None and (final / "weights.bin").is_file()
    assert not list(tmp_path.glob(".artifact.tmp-*"))


def test_a_finished_build_that_cannot_be_renamed_is_kept_and_used_next_time(tmp_path,
                                                                           windows_renames):
    """Before, `finally: rmtree(tmp)` deleted the finished build after a failed rename."""
    windows_renames(is_build)  # always refused: something holds a file in it open
    with pytest.raises(Phi3AipcError) as err:  # one line, exit code 2 in the CLI
        build_once(tmp_path / "artifact", two_files)
    message = str(err.value)
    assert "It is kept" in message and "run the same command again" in message
    kept = list(tmp_path.glob(".artifact.tmp-*"))
    assert len(kept) == 1 and (kept[0] / "weights.bin").is_file()
    windows_renames(lambda path: False)  # the holder has let go

    def must_not_build(tmp):
        raise AssertionError("built again")

    final = build_once(tmp_path / "artifact", must_not_build)
    assert check_sealed(final) is None and not list(tmp_path.glob(".artifact.tmp-*"))


def test_an_unfinished_build_is_removed_when_it_fails(tmp_path):
    def half(tmp):
        (tmp / "weights.bin").write_bytes(b"\1" * 10)
        raise RuntimeError("the converter failed")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "artifact", half)
    # nothing but the lock file, which filelock removes on release on Windows
    assert [p for p in tmp_path.iterdir() if p.name != "artifact.lock"] == []


def fake_artifact(cache_root: Path, route: str, model: str) -> Path:
    folder = cache_root / route / model / "int4-0123456789ab"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\0" * 100_000)
    (folder / cache.MANIFEST).write_text(json.dumps(
        {"route": route, "model": model, "precision": "int4"}), encoding="utf-8")
    return folder


def test_cache_clear_says_what_is_in_use_removes_the_rest_and_the_leftovers(
        tmp_path, monkeypatch, capsys, windows_renames):
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    kept = fake_artifact(tmp_path, "openvino", "in-use")
    others = [fake_artifact(tmp_path, "openvino", "free"),
              fake_artifact(tmp_path, "onnxruntime-genai", "free")]
    # What Windows left before: a removal whose files were held, a build that was killed, and
    # a build that is running now (its lock is held).
    leftovers = [tmp_path / "openvino" / "free" / ".int4-aaaa.discard-0123abcd",
                 tmp_path / "onnxruntime-genai" / "free" / ".int4-bbbb.tmp-4567cdef"]
    running = tmp_path / "openvino" / "free" / ".int4-cccc.tmp-89abcdef"
    for folder in [*leftovers, running]:
        folder.mkdir(parents=True)
        (folder / "part.bin").write_bytes(b"\0" * 1000)
    assert main(["cache", "list"]) == 0
    assert "and 3 leftover folders of interrupted builds or removals" in capsys.readouterr().out

    windows_renames(lambda path: path == kept, winerror=32)  # a notebook has it open
    with FileLock(str(running.parent / "int4-cccc") + ".lock"):
        code = main(["cache", "clear"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"phi3-aipc: error: {kept} is in use")
    assert "close what has a file in it open" in err and "Traceback" not in err
    assert "2 cached folders removed" in out and "and 2 leftover folders" in out
    assert kept.is_dir() and not any(f.exists() for f in [*others, *leftovers])
    assert running.is_dir()  # not a leftover: a build in progress


def test_cache_clear_goes_on_after_a_folder_in_use(tmp_path, monkeypatch, capsys,
                                                  windows_renames):
    """The same refusal, the folder in use listed first: the rest is still removed."""
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    kept = fake_artifact(tmp_path, "onnxruntime-genai", "a-in-use")
    other = fake_artifact(tmp_path, "openvino", "z-free")
    windows_renames(lambda path: path == kept)
    assert main(["cache", "clear"]) == 2
    out, err = capsys.readouterr()
    assert "internal error" not in err and f"removed {other}" in out


def test_the_npu_worker_discards_a_bad_compiled_model_outside_its_except_block(
        tmp_path, monkeypatch):
    """The failed load's traceback holds its tensors (memory-mapped on Windows): the folder is
    discarded only after the except block, with the failed load's objects gone."""
    from phi3_aipc.routes import npu_worker

    class Mapped:  # stands for a tensor on a memory-mapped file
        pass

    alive = []

    def load_saved(folder):
        tensors = Mapped()
        alive.append(weakref.ref(tensors))
        raise ValueError("compiled by NPU library 1.3.0, this is 1.4.0")

    seen = []
    real_discard = cache.discard

    def discard(folder):
        seen.append((sys.exc_info()[0], alive[0]() is None))
        real_discard(folder)

    monkeypatch.setattr(npu_worker, "discard", discard)  # the worker's own name for it
    compiled = []
    build_once(tmp_path / "compiled-int4", two_files)  # saved by an earlier worker
    assert npu_worker.saved_or_compiled(
        tmp_path / "compiled-int4", lambda f: compiled.append(two_files(f)),
        load_saved) is None  # compiled anew: the caller has the model
    gc.collect()
    assert seen == [(None, True)]  # outside the except block, the failed load's objects gone
    assert len(compiled) == 1 and check_sealed(tmp_path / "compiled-int4") is None


def test_the_npu_worker_runs_outside_its_compiled_models(stand_in, tmp_path, monkeypatch):
    """Windows cannot remove a folder that is a process's current folder: the worker's is not
    the folder of its compiled models, and `cache list` shows both."""
    from phi3_aipc.routes.npu_library import NPULibraryRoute, worker_cwd, worker_folder

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    cwd, models = worker_cwd(stand_in), worker_folder(stand_in)
    assert models not in cwd.parents and cwd != models and cwd.is_dir()
    (models.parent / f".{models.name}.discard-0123abcd").mkdir()  # a leftover: not listed
    listed = NPULibraryRoute().library_caches()
    assert [(f, what.split(" ")[0]) for f, what in listed] == [(models, "compiled"),
                                                               (cwd, "the")]
