"""Where phi3_aipc keeps what it builds, and how a folder gets there whole or not at all."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from filelock import FileLock
from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """The cache root: `PHI3_AIPC_CACHE` if set, else the user's cache directory."""
    root = os.environ.get("PHI3_AIPC_CACHE") or user_cache_dir("phi3-aipc", appauthor=False)
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it first with `build(tmp_folder)` if it does not exist.

    The folder is built under a temporary name beside `final` and renamed into place only when
    `build` returns, so an interrupted build never leaves a folder that looks finished. A file
    lock makes a second process wait for the first one's build instead of racing it.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():
            return final
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            build(tmp)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


MANIFEST = "phi3-aipc.json"


def write_manifest(folder: Path, route: str, source, precision: str, options: dict,
                   command: list[str], packages: tuple[str, ...]) -> None:
    """Record in an artifact how it was made: from what, with which settings and versions."""
    made = {"route": route, "model": source.name, "fingerprint": source.fingerprint(),
            "precision": precision, "options": options, "command": command,
            "packages": {p: version(p) for p in packages}}
    (folder / MANIFEST).write_text(json.dumps(made, indent=2), encoding="utf-8")


def read_manifest(folder: Path) -> dict:
    """What `write_manifest` recorded, or {} for a folder made some other way."""
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


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
