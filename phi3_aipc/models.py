"""Where a model comes from: a hub id, a local folder, or the offline stand-in."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFound
from .standin import BANNER_NOTE, BENCH_LAYERS, ensure_bench_stand_in, ensure_stand_in

DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"
STAND_IN = "stand-in"
BENCH_STAND_IN = "bench-stand-in"  # "bench-stand-in:8" for 8 layers
MODEL_ENV = "PHI3_AIPC_MODEL"
# Only what a Phi-3 checkpoint needs: weights, configs, tokenizer.
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: the name the user gave, the folder it lives in, and what kind it is."""

    name: str
    path: Path
    kind: str  # "hub", "local", "stand-in" or "bench-stand-in"

    @property
    def is_stand_in(self) -> bool:
        return self.kind == STAND_IN

    def fingerprint(self) -> str:
        """What identifies these weights: the recipe, the hub commit, or the files' stamps."""
        if self.kind in (STAND_IN, BENCH_STAND_IN, "hub"):
            return f"{self.name}@{self.path.name}"  # recipe digest / snapshot commit
        return f"{self.path.name}@{folder_fingerprint(self.path)}"


def folder_fingerprint(folder: Path) -> str:
    """A digest of a folder's path and its files' names, sizes and modification times."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_model() -> str:
    """`PHI3_AIPC_MODEL` if set, else Phi-3-mini-4k-instruct."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def resolve_model(model: str | None = None, progress: bool = True) -> ModelSource:
    """Turn a model name into a local folder, downloading or building it if needed.

    `model` is a hub id, a local folder, "stand-in", or "bench-stand-in[:LAYERS]" (Phi-3-mini's
    layer shapes with random weights, for benchmarks); None means the default. Only the default
    (no argument, no `PHI3_AIPC_MODEL`) falls back to the stand-in when the hub can't be reached,
    with a banner that says so; a model asked for by name that can't be had is an error.
    """
    implicit = model is None and not os.environ.get(MODEL_ENV)
    name = model or default_model()
    if name == STAND_IN:
        return ModelSource(STAND_IN, ensure_stand_in(progress), STAND_IN)
    if name.split(":")[0] == BENCH_STAND_IN:
        layers = bench_layers(name)
        return ModelSource(name, ensure_bench_stand_in(layers, progress), BENCH_STAND_IN)
    folder = Path(name).expanduser()
    if folder.is_dir():
        check_phi3_folder(folder)
        return ModelSource(name, folder.resolve(), "local")
    if looks_like_path(name):
        raise ModelNotFound(f"Model folder {name!r} does not exist. Give an existing folder, a "
                            f"hub id such as {DEFAULT_MODEL}, or '{STAND_IN}'.")
    try:
        return ModelSource(name, download(name, progress), "hub")
    except ModelNotFound as err:
        if not implicit:
            raise
        print_stand_in_banner(str(err))
        return ModelSource(STAND_IN, ensure_stand_in(progress), STAND_IN)


def bench_layers(name: str) -> int:
    """The layer count in "bench-stand-in[:LAYERS]"."""
    _, _, layers = name.partition(":")
    if not layers:
        return BENCH_LAYERS
    if not layers.isdigit() or not 1 <= int(layers) <= 32:
        raise ModelNotFound(f"{name!r}: give the bench stand-in's layer count as 1-32, e.g. "
                            f"'{BENCH_STAND_IN}:8' (default {BENCH_LAYERS}).")
    return int(layers)


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", "/", "\\")) or name.count("/") > 1 or "\\" in name or (
        len(name) > 1 and name[1] == ":"
    )


def check_phi3_folder(folder: Path) -> None:
    """Refuse a folder that is not a Phi-3 checkpoint, saying what is missing."""
    genai = folder / "genai_config.json"  # a model already built for ONNX Runtime GenAI
    if genai.is_file() and not (folder / "config.json").is_file():
        model_type = json.loads(genai.read_text(encoding="utf-8"))["model"].get("type")
        if model_type != "phi3":
            raise ModelNotFound(f"{folder} holds an ONNX Runtime GenAI {model_type!r} model, "
                                "not Phi-3. These notebooks are written for Phi-3-mini.")
        return
    config = folder / "config.json"
    if not config.is_file():
        raise ModelNotFound(f"{folder} has no config.json, so it is not a Hugging Face model "
                            "folder. Point to the folder that holds config.json and the weights.")
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type != "phi3":
        raise ModelNotFound(f"{folder} holds a {model_type!r} model, not Phi-3 (model_type "
                            "'phi3'). These notebooks are written for Phi-3-mini.")
    weights = ("*.safetensors", "*.bin", "openvino_model.xml", "genai_config.json")
    if not any(any(folder.glob(pattern)) for pattern in weights):
        raise ModelNotFound(f"{folder} has a Phi-3 config.json but no weight files "
                            "(*.safetensors). Download the model again.")


def download(repo_id: str, progress: bool = True) -> Path:
    """Fetch a hub model into the Hugging Face cache (or find it there) and return its folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:
        pass  # not cached yet
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFound(f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                            "is set. Download it once while online, or unset HF_HUB_OFFLINE.")
    reason = hub_unreachable()
    if reason:
        raise ModelNotFound(f"Cannot reach the model hub to download {repo_id} ({reason}). "
                            "Connect to the internet, set HF_ENDPOINT to a reachable mirror, or "
                            f"use --model {STAND_IN} / PHI3_AIPC_MODEL={STAND_IN}.")
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as err:
        raise ModelNotFound(f"Could not download {repo_id}: {type(err).__name__}: {err}. "
                            "Check the model id and your connection (or HF_TOKEN for gated "
                            "models).") from None


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None if the hub answers within `timeout` seconds, else a short reason."""
    import requests
    from huggingface_hub import constants

    try:
        requests.head(constants.ENDPOINT, timeout=timeout)
    except requests.RequestException as err:
        return type(err).__name__
    return None


def print_stand_in_banner(reason: str) -> None:
    line = "=" * 78
    print(
        f"{line}\n USING THE OFFLINE STAND-IN, NOT PHI-3\n {reason}\n {BANNER_NOTE}\n"
        f" To use the real model: go online (or set HF_ENDPOINT) and run again, or download it "
        f"once with\n   hf download {DEFAULT_MODEL}\n{line}",
        file=sys.stderr,
    )
