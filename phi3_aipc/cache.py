"""Where phi3_aipc keeps what it builds, and how a folder gets there whole or not at all."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from platformdirs import user_cache_dir

from .envs import installed_version


def cache_dir() -> Path:
    """The cache root: `PHI3_AIPC_CACHE` if set, else the user's cache directory."""
    from .errors import BadInput

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


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it first with `build(tmp_folder)` unless a sound one exists.

    The folder is built under a temporary name beside `final`, sealed (every file's size and
    checksum go into its manifest) and renamed into place only when `build` returns, so an
    interrupted build never leaves a folder that looks finished. A file lock makes a second
    process wait for the first one's build instead of racing it. A finished folder whose files
    no longer match its manifest is reported and built again.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if final.is_dir():
            problem = check_sealed(final)
            if problem is None:
                return final
            print(f"{final} is damaged ({problem}): building it again.", file=sys.stderr)
            discard(final)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            build(tmp)
            seal(tmp, home=final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def discard(folder: Path) -> None:
    """Remove a folder: first out of the way (a rename is atomic), then from the disk."""
    doomed = folder.with_name(f".{folder.name}.discard-{uuid.uuid4().hex[:8]}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


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
    os.replace(tmp, path)


def check_sealed(folder: Path) -> str | None:
    """None if the folder still matches its manifest, else what is wrong with it.

    Sizes are always compared. A file whose times changed is checksummed again; so is every
    file of a folder made elsewhere (copied from another computer or folder: a copy keeps
    modification times, so only the content can tell), which is then adopted as this
    folder's own, so the full check happens once. It says so on stderr: it takes a while.
    """
    made = read_manifest(folder)
    if "damaged" in made:
        return made["damaged"]
    if "files" not in made:
        return f"its manifest {MANIFEST} is missing or unfinished"
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
    """Total size of the files under `path`, in MB."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def check_given(folder: Path) -> None:
    """Refuse a prepared model given by folder whose files no longer match its manifest."""
    from .errors import BadInput

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
        if folder.is_dir():
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


def clear_artifacts(route: str | None = None,
                    library_folders: list[tuple[str, Path, str]] = ()) -> list[str]:
    """Remove the cached artifacts of `route` (all routes when None); return their folders."""
    removed = []
    for entry in list_artifacts(library_folders):
        if route is None or entry["route"] == route:
            discard(Path(entry["path"]))
            removed.append(entry["path"])
    return removed
