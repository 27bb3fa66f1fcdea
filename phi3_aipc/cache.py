"""Where phi3_aipc keeps what it builds, and how a folder gets there whole or not at all."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout
from platformdirs import user_cache_dir

from .envs import installed_version
from .errors import BadInput, Phi3AipcError

# Windows refuses to rename or remove a folder while a file in it is open or memory-mapped, or
# while a process has its current folder in it: WinError 5 (access denied), 32 (sharing
# violation), 145 (folder not empty). Some holders let go by themselves within seconds (an
# antivirus scanner or the search indexer reading fresh files): those are waited for, RETRY_S.
IN_USE_WINERRORS = (5, 32, 145)
RETRY_S = 5.0
HOLDERS = ("a notebook kernel, chat or worker using it, a terminal or Explorer window in that "
           "folder")
# What interrupted builds (.NAME.tmp-*) and removals (.NAME.discard-*) leave: hidden folders.
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|discard)-[0-9a-f]{8}$")


class FolderInUse(Phi3AipcError):
    """Windows would not let a folder be renamed or removed: something has a file in it open."""


def in_use(err: OSError) -> bool:
    """Whether `err` is Windows refusing because something has a file in the folder open."""
    return getattr(err, "winerror", None) in IN_USE_WINERRORS


def replace_retrying(src: Path, dst: Path) -> None:
    """os.replace(src, dst), tried again for up to RETRY_S seconds while Windows says the file
    or folder is in use (see IN_USE_WINERRORS); then, or for any other error, it raises."""
    deadline = time.monotonic() + RETRY_S
    pause = 0.05
    while True:
        try:
            os.replace(src, dst)
            return
        except OSError as err:
            if not in_use(err) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def why(err: OSError) -> str:
    return f"{err.strerror or err}" + (f", WinError {err.winerror}"
                                       if getattr(err, "winerror", None) else "")


def cache_dir() -> Path:
    """The cache root: `PHI3_AIPC_CACHE` if set, else the user's cache directory."""
    root = os.environ.get("PHI3_AIPC_CACHE") or user_cache_dir("phi3-aipc", appauthor=False)
    try:
        path = Path(root).expanduser().resolve()
    except RuntimeError:  # ~name for a user this computer does not have
        raise BadInput(f"PHI3_AIPC_CACHE is {root!r}, and that home folder is unknown here. "
                       "Set PHI3_AIPC_CACHE to a folder you can write to.") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError("it is not writable")
    except OSError as err:
        why = "it is a file" if path.exists() and not path.is_dir() else \
            getattr(err, "strerror", None) or str(err)
        raise BadInput(f"The cache folder {path} cannot be used ({why}). Set PHI3_AIPC_CACHE "
                       "to a folder you can write to.") from None
    return path


def quality_dir() -> Path:
    """Where `phi3-aipc quality` keeps its reference logits, one .npz file per reference."""
    return cache_dir() / "quality"


def build_once(final: Path, build: Callable[[Path], None],
               adopt: Callable[[Path], None] | None = None) -> Path:
    """Return `final`, building it first with `build(tmp_folder)` unless a sound one exists.

    The folder is built under a temporary name beside `final`, sealed (every file's size and
    checksum go into its manifest) and renamed into place only when `build` returns, so an
    interrupted build never leaves a folder that looks finished. A file lock makes a second
    process wait for the first one's build instead of racing it. A finished folder whose files
    no longer match its manifest is reported and built again. A finished build is never
    deleted: where the rename fails (Windows: a file in it is still open), it is kept, and the
    next call renames it into place instead of building again.

    `adopt`: for a folder where someone builds by hand too (a notebook's export): a finished
    folder there without a seal is checked by `adopt(final)` (which raises if it is not
    finished) and sealed as it is, never discarded and built again.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        for stale in sorted(final.parent.glob(f".{final.name}.tmp-*")):
            if not final.exists() and "files" in read_manifest(stale):  # sealed: finished
                move_into_place(stale, final)  # and checked below, as any finished folder
            else:  # a build that was killed halfway
                shutil.rmtree(stale, ignore_errors=True)
        if final.is_dir() and adopt is not None and not {"files", "damaged"} & set(
                read_manifest(final)):
            adopt(final)
            seal(final)
            return final
        if final.is_dir():
            problem = check_sealed(final)
            if problem is None:
                return final
            print(f"{final} is damaged ({problem}): building it again.", file=sys.stderr)
            try:
                discard(final)
            except OSError as err:
                raise FolderInUse(f"{final} is damaged and must be built again, but it cannot "
                                  f"be removed ({why(err)}): close what has a file in it open "
                                  f"({HOLDERS}), then try again.") from None
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            build(tmp)
            seal(tmp, home=final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # unfinished: never used
            raise
        move_into_place(tmp, final)
    return final


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a finished build to its name; where that fails, keep it and say so."""
    try:
        replace_retrying(tmp, final)
    except OSError as err:
        raise FolderInUse(f"The finished build {tmp} could not be renamed to {final.name} "
                          f"({why(err)}). It is kept: close what has a file in it open "
                          f"({HOLDERS}, an antivirus scan), then run the same command again, "
                          "which puts it in place without building it again.") from None


def discard(folder: Path) -> None:
    """Remove a folder: first out of the way (a rename is atomic), then from the disk.

    Raises OSError when the rename fails, PermissionError when Windows says the folder is in
    use beyond RETRY_S. What the disk keeps after the rename (a file a scanner still holds) is
    a leftover that `sweep_leftovers` removes later."""
    doomed = folder.with_name(f".{folder.name}.discard-{uuid.uuid4().hex[:8]}")
    replace_retrying(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def leftovers(root: Path) -> list[Path]:
    """The hidden folders under `root` that interrupted builds (.NAME.tmp-*) and removals that
    Windows did not let finish (.NAME.discard-*) left behind, outermost only; not the folder of
    a build that is running (its lock is held)."""
    found: list[Path] = []
    for path in sorted(root.rglob(".*")) if root.is_dir() else []:
        match = LEFTOVER.match(path.name)
        if not match or not path.is_dir() or any(p in path.parents for p in found):
            continue
        if match["kind"] == "tmp":
            try:
                with FileLock(str(path.parent / match["name"]) + ".lock", timeout=0):
                    pass
            except Timeout:
                continue  # a build in progress
            except OSError:
                continue  # no lock can be taken here (a read-only cache): left alone
        found.append(path)
    return found


def sweep_leftovers(root: Path) -> tuple[int, float, list[Path]]:
    """Remove `leftovers(root)`: how many were removed, their MB, and those still in use."""
    removed, mb, kept = 0, 0.0, []
    for path in leftovers(root):
        size = folder_size_mb(path)
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            kept.append(path)
        else:
            removed, mb = removed + 1, mb + size
    return removed, mb, kept


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(folder: Path, home: Path | None = None) -> None:
    """Add every file's size, times and checksum to the folder's manifest, and where it was
    made: this computer and `home`, the folder it is renamed to (default: `folder`)."""
    made = read_manifest(folder)
    made["files"] = {f.relative_to(folder).as_posix(): {**file_times(f), "sha256": sha256(f)}
                     for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}
    made["size_mb"] = round(sum(e["size"] for e in made["files"].values()) / 1e6, 1)
    made["made_in"] = made_in(home or folder)
    write_atomically(folder / MANIFEST, json.dumps(made, indent=2))


def file_times(path: Path) -> dict:
    """What changes when a file is written: its size, its modification time (which `cp -p`,
    `rsync -a`, a zip or `touch -d` can set back) and its status-change time (which no tool
    sets back on Linux and macOS; on Windows this is the creation time)."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def made_in(folder: Path) -> dict:
    """Where a folder was made: a copy (another computer, another folder) has other values."""
    return {"host": platform.node(), "folder": str(Path(folder).resolve())}


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` whole: a reader (or a kill) never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    replace_retrying(tmp, path)


def check_sealed(folder: Path) -> str | None:
    """None if the folder still matches its manifest, else what is wrong with it.

    Sizes are always compared. A file whose times changed is checksummed again; so is every
    file of a folder made elsewhere (copied from another computer or folder: a copy keeps
    modification times, so only the content can tell), which is then adopted as this
    folder's own, so the full check happens once. It says so on stderr: it takes a while.
    """
    made = read_manifest(folder)
    if "damaged" in made:  # a reason, whatever a foreign manifest put there
        return str(made["damaged"] or "") or f"its manifest {MANIFEST} says it is damaged"
    if "files" not in made:
        return f"its manifest {MANIFEST} is missing or unfinished"
    if not isinstance(made["files"], dict) or not made["files"]:  # a sealed folder has files
        return f"its manifest {MANIFEST} does not list the files as it should"
    here = made_in(folder)
    elsewhere = restamp = made.get("made_in") != here
    try:
        files = {name: (folder / name, expected) for name, expected in made["files"].items()}
        for name, (path, expected) in files.items():  # the quick checks first
            if not path.is_file():
                return f"{name} is missing"
            size = path.stat().st_size
            if size != expected["size"]:
                return f"{name} has {size} bytes, the manifest says {expected['size']}"
        if elsewhere:
            where = made.get("made_in") if isinstance(made.get("made_in"), dict) else {}
            print(f"Checking every file of {folder} ({made.get('size_mb', '?')} MB) before using "
                  f"it: it was made in {where.get('folder', 'an unknown place')} on "
                  f"{where.get('host', 'an unknown computer')}.", file=sys.stderr)
        for name, (path, expected) in files.items():
            now = file_times(path)
            if elsewhere or now != {k: expected.get(k) for k in now}:
                if sha256(path) != expected["sha256"]:
                    return f"{name} changed since it was made"
                expected.update(now)  # the same content: the new times are remembered
                restamp = True
    except (AttributeError, KeyError, TypeError, ValueError):
        return f"its manifest {MANIFEST} does not list the files as it should"
    if restamp:
        made["made_in"] = here
        try:  # adopt it; a read-only copy (a share) is simply checked in full each time
            write_atomically(folder / MANIFEST, json.dumps(made, indent=2))
        except OSError:
            pass
    return None


MANIFEST = "phi3-aipc.json"


def write_manifest(folder: Path, route: str, source, precision: str, options: dict,
                   command: list[str], packages: tuple[str, ...]) -> None:
    """Record in an artifact how it was made: from what, with which settings and versions."""
    made = {"route": route, "model": source.name, "fingerprint": source.fingerprint(),
            "precision": precision, "options": options, "command": command,
            "packages": {p: installed_version(p) for p in packages}}
    write_atomically(folder / MANIFEST, json.dumps(made, indent=2))


def read_manifest(folder: Path) -> dict:
    """What `write_manifest` recorded, {} for a folder made some other way, or {"damaged": why}
    for a manifest that is not a JSON object (a damaged folder, never a crash)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {"damaged": f"its manifest {MANIFEST} is not readable JSON"}
    if not isinstance(made, dict):
        return {"damaged": f"its manifest {MANIFEST} is not a JSON object"}
    return made


def artifact_dir(route: str, model_name: str, fingerprint: str, precision: str,
                 options: dict) -> Path:
    """The cache folder for one prepared model: readable names, then a digest of what made it."""
    digest = hashlib.sha256(
        json.dumps([fingerprint, precision, options], sort_keys=True).encode()
    ).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model_name).strip("-") or "model"
    return cache_dir() / route / slug / f"{precision}-{digest}"


def folder_size_mb(path: Path) -> float:
    """Total size of the files under `path`, in MB. A leftover being removed by another process
    (a `.discard-` folder) loses files while it is measured: those count as gone."""
    total = 0
    for f in Path(path).rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except FileNotFoundError:
            pass
    return total / 1e6


def check_given(folder: Path) -> None:
    """Refuse a prepared model given by folder whose files no longer match its manifest."""
    made = read_manifest(folder)
    if "files" in made or "damaged" in made:
        problem = check_sealed(folder)
        if problem:
            raise BadInput(f"{folder} is damaged: {problem}. Delete it and prepare it again.")


def list_artifacts(library_folders: list[tuple[str, Path, str]] = ()) -> list[dict]:
    """Every finished artifact in the cache, with its manifest and size; and the folders that
    routes' libraries fill themselves, given as (route, folder, what it holds)."""
    found = []
    for manifest in sorted(cache_dir().glob(f"*/*/*/{MANIFEST}")) + \
            sorted(cache_dir().glob(f"stand-in/*/{MANIFEST}")):
        folder = manifest.parent
        if folder.name.startswith("."):
            continue
        made = read_manifest(folder)
        text = lambda key: made.get(key) if isinstance(made.get(key), str) else None  # noqa: E731
        stand_in = folder.parent.name == "stand-in"
        options = made.get("options") if isinstance(made.get("options"), dict) else {}
        if "damaged" in made:
            options = {"contents": f"DAMAGED: {made['damaged']}"}
        found.append({"route": text("route") or ("stand-in" if stand_in else folder.parts[-3]),
                      "model": text("model") or ("stand-in" if stand_in else
                                                 folder.parent.name),
                      "precision": text("precision") or "?",
                      "options": options,
                      "size_mb": round(folder_size_mb(folder), 1),
                      "path": str(folder)})
    for folder in sorted(cache_dir().glob("notebooks/*/*")):  # the notebooks' own exports
        if folder.is_dir() and not folder.name.startswith("."):  # not a build under way
            unfinished = " (unfinished: a later run makes it again)" \
                if folder.name.endswith(".partial") else ""
            found.append({"route": "notebooks", "model": folder.parent.name, "precision": "-",
                          "options": {"contents": f"{folder.name}{unfinished}"},
                          "size_mb": round(folder_size_mb(folder), 1), "path": str(folder)})
    quality = quality_dir()
    references = sorted(quality.glob("*.npz")) if quality.is_dir() else []
    if references:
        found.append({"route": "quality", "model": "-", "precision": "-",
                      "options": {"contents": f"{len(references)} reference(s) of the quality "
                                              "command (made again when needed)"},
                      "size_mb": round(folder_size_mb(quality), 1), "path": str(quality)})
    for route, folder, what in library_folders:  # no manifest, but they are ours to list
        if folder.is_dir():
            found.append({"route": route, "model": folder.name, "precision": "-",
                          "options": {"contents": what},
                          "size_mb": round(folder_size_mb(folder), 1), "path": str(folder)})
    return found


@dataclass
class Cleared:
    """What `clear_artifacts` did."""
    removed: list[str] = field(default_factory=list)  # the folders removed
    refused: list[str] = field(default_factory=list)  # one line each: not removed, and why
    leftovers: int = 0  # leftover folders of interrupted builds and removals, removed
    leftovers_mb: float = 0.0


def clear_artifacts(route: str | None = None,
                    library_folders: list[tuple[str, Path, str]] = ()) -> Cleared:
    """Remove the cached artifacts of `route` (all routes when None), and the leftovers of
    interrupted builds and removals under its folder. A folder that cannot be removed (Windows:
    something has a file in it open) is reported in one line, and the rest is removed."""
    cleared = Cleared()
    for entry in list_artifacts(library_folders):
        if route is None or entry["route"] == route:
            try:
                discard(Path(entry["path"]))
            except FileNotFoundError:
                continue  # gone meanwhile (inside a folder removed before it)
            except OSError as err:
                cleared.refused.append(
                    f"{entry['path']} is in use, not removed: close what has a file in it open "
                    f"({HOLDERS}), then run this command again." if in_use(err) else
                    f"{entry['path']} could not be removed: {why(err)}.")
                continue
            cleared.removed.append(entry["path"])
    root = cache_dir() / route if route else cache_dir()
    cleared.leftovers, cleared.leftovers_mb, kept = sweep_leftovers(root)
    if kept:
        cleared.refused.append(f"{len(kept)} leftover folder(s) of interrupted builds or "
                               f"removals are in use, not removed (the first: {kept[0]}): close "
                               f"what has a file in them open ({HOLDERS}), then run this "
                               "command again.")
    return cleared
