"""Where a model comes from: a hub id, a local folder, a prebuilt build, or the offline stand-in."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .cache import MANIFEST
from .catalog import DEFAULT_MODEL, FAMILY, MODELS, weight_count
from .errors import ModelNotFound
from .standin import (
    BANNER_NOTE,
    BENCH_LAYERS,
    ensure_bench_stand_in,
    ensure_stand_in,
    ensure_variant_stand_in,
)

STAND_IN = "stand-in"
VARIANT_STAND_IN = "variant-stand-in"  # "stand-in:phi-4-mini": a catalog model's architecture
BENCH_STAND_IN = "bench-stand-in"  # "bench-stand-in:8" for 8 layers
MODEL_ENV = "PHI3_AIPC_MODEL"
# Only what a Phi-3 checkpoint needs: weights, configs, tokenizer.
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]
CONFIG_FILES = [p for p in HUB_FILES if p != "*.safetensors"]  # all but the weights


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: the name the user gave, the folder it lives in, and what kind it is."""

    name: str
    path: Path
    kind: str  # "hub", "local", "prebuilt", "stand-in", "variant-stand-in" or "bench-stand-in"

    @property
    def is_stand_in(self) -> bool:
        return self.kind == STAND_IN

    def fingerprint(self) -> str:
        """What identifies these weights: the recipe, the hub commit, or the files' stamps."""
        if self.kind in (STAND_IN, VARIANT_STAND_IN, BENCH_STAND_IN, "hub", "prebuilt"):
            return f"{self.name}@{self.path.name}"  # recipe digest / snapshot commit
        return f"{self.path.name}@{folder_fingerprint(self.path)}"


def folder_fingerprint(folder: Path) -> str:
    """A digest of a folder's path and its files' names, sizes and modification times. Our own
    manifest is left out: it is rewritten when its files' status times change (a copy, a hard
    link), which is no change of the model."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_model() -> str:
    """`PHI3_AIPC_MODEL` if set, else Phi-3-mini-4k-instruct."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def resolve_model(model: str | None = None, progress: bool = True,
                  weights: bool = True, artifacts: tuple[str, ...] = ()) -> ModelSource:
    """Turn a model name into a local folder, downloading or building it if needed.

    `model` is a hub id (or a catalog model's short name, e.g. "phi-3.5-mini"), a local
    folder, "stand-in", "stand-in:<short name>" (a catalog model's architecture, small, with
    random weights), or "bench-stand-in[:LAYERS]" (Phi-3-mini's
    layer shapes with random weights, for benchmarks); None means the default. Only the default
    (no argument, no `PHI3_AIPC_MODEL`) falls back to the stand-in when the hub can't be reached,
    with a banner that says so; a model asked for by name that can't be had is an error.
    `weights=False` fetches only a hub model's configuration and tokenizer, enough to decide
    whether to export it (`with_weights` fetches the rest when it is). `artifacts`: the files
    that mark a route's prepared artifacts (the routes' `artifact_marker`s, which the layer
    above passes): a folder holding one has no checkpoint weights to check here; the route
    that reads it checks it.
    """
    implicit = model is None and not os.environ.get(MODEL_ENV)
    name = catalog_id(model or default_model())
    if name == STAND_IN:
        return ModelSource(STAND_IN, ensure_stand_in(progress), STAND_IN)
    if name.startswith(STAND_IN + ":"):
        short = name.partition(":")[2]
        return ModelSource(name, ensure_variant_stand_in(short, progress), VARIANT_STAND_IN)
    if name.split(":")[0] == BENCH_STAND_IN:
        layers = bench_layers(name)
        return ModelSource(name, ensure_bench_stand_in(layers, progress), BENCH_STAND_IN)
    folder = Path(name).expanduser()
    if folder.is_dir():
        check_phi3_folder(folder, artifacts)
        return ModelSource(name, folder.resolve(), "local")
    if looks_like_path(name):
        raise ModelNotFound(f"Model folder {name!r} does not exist. Give an existing folder, a "
                            f"hub id such as {DEFAULT_MODEL}, or '{STAND_IN}'.")
    try:
        return ModelSource(name, download(name, progress, patterns=None if weights else
                                          CONFIG_FILES), "hub")
    except ModelNotFound as err:
        if not implicit:
            raise
        print_stand_in_banner(str(err))
        return ModelSource(STAND_IN, ensure_stand_in(progress), STAND_IN)


def with_weights(source: ModelSource, progress: bool = True) -> ModelSource:
    """`source` with its weights: a hub model resolved without them is completed (the 7.6 GB
    download happens here, once an export needs it); any other model is returned as it is."""
    if source.kind != "hub" or has_weights(source.path):
        return source
    return ModelSource(source.name, download(source.name, progress), "hub")


def has_weights(folder: Path) -> bool:
    """Whether every weight file the checkpoint names is there (a download can stop halfway)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return False
        return all((folder / shard).is_file() for shard in shards)
    return any(folder.glob("*.safetensors"))


def catalog_id(name: str) -> str:
    """The hub id of a catalog model given by its short name; other names as they are."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFound(f"Give a model: a hub id such as {DEFAULT_MODEL}, a local folder, "
                            f"or '{STAND_IN}'; got {name!r}.")
    by_short = {m.short: m.id for m in MODELS.values()}
    return by_short.get(name, name)


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


def check_phi3_folder(folder: Path, artifacts: tuple[str, ...] = ()) -> None:
    """Refuse a folder that is not a Phi-3 checkpoint, saying what is missing; a folder holding
    one of `artifacts` (a route's prepared artifact) needs at most its config.json here: the
    route that reads it checks the rest (some, as Microsoft's ONNX builds, carry none)."""
    artifact = any((folder / marker).is_file() for marker in artifacts)
    config = folder / "config.json"
    if artifact and not config.is_file():
        return
    if not config.is_file():
        raise ModelNotFound(f"{folder} has no config.json, so it is not a Hugging Face model "
                            "folder. Point to the folder that holds config.json and the weights.")
    settings = read_json(config, folder)
    model_type = settings.get("model_type")
    if model_type not in FAMILY:
        raise ModelNotFound(f"{folder} holds a {model_type!r} model, not Phi-3 (model_type "
                            "'phi3'). These notebooks are written for Phi-3-mini.")
    if artifact:
        return
    if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin")):
        raise ModelNotFound(f"{folder} has a Phi-3 config.json but no weight files "
                            "(*.safetensors). Download the model again.")
    if (folder / "tokenizer.json").is_file():
        read_json(folder / "tokenizer.json", folder)
    check_template(folder / "chat_template.jinja")
    check_checkpoint(folder, settings)


def check_template(path: Path) -> None:
    """A chat_template.jinja (transformers 5 saves the template there) must be a template:
    every route's tokenizer renders it, and an empty or broken one fails in each differently."""
    import jinja2

    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise ModelNotFound(f"{path.parent}: {path.name} is empty. Delete it (the template in "
                            "tokenizer_config.json is then used) or download the model again.")
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as err:
        raise ModelNotFound(f"{path.parent}: {path.name} is not a valid template ({err.message}, "
                            f"line {err.lineno}). Download the model again.") from None


SHAPES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "vocab_size")


def read_json(path: Path, folder: Path) -> dict:
    """A JSON object from `path`, or a clear error naming the damaged file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise ModelNotFound(f"{folder}: {path.name} is damaged (not a JSON object). Download "
                            "the model again.")
    return data


def check_checkpoint(folder: Path, config: dict) -> None:
    """Refuse a config.json whose shapes are not whole numbers, or that promises more weights
    than the files hold (a config claiming 200000 layers would be built before anything
    failed), and weight files whose headers are damaged."""
    for key in SHAPES:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelNotFound(f"{folder}: config.json's {key} is {value!r}, not a positive "
                                "whole number. Download the model again.")
    if not any(folder.glob("*.safetensors")):
        return  # exports and .bin checkpoints: their own loaders check them
    try:
        stored = safetensors_params(folder)[0]
        missing = {f: safetensors_missing_bytes(f) for f in folder.glob("*.safetensors")}
    except Exception as err:  # any header a truncated or foreign file has: struct, JSON, keys
        raise ModelNotFound(f"{folder}: a *.safetensors file is damaged ({type(err).__name__}: "
                            "its header cannot be read). Download the model again.") from None
    for f, short in missing.items():
        if short:
            raise ModelNotFound(f"{folder}: {f.name} is {short} bytes shorter than its header "
                                "says (an interrupted download?). Download the model again.")
    try:
        expected = weight_count(config)
    except (KeyError, TypeError, ZeroDivisionError):
        expected = stored  # the shapes below say what is wrong
    if not 0.5 * stored <= expected <= 1.5 * stored:
        raise ModelNotFound(f"{folder}: config.json describes {expected / 1e9:.2f} billion "
                            f"weights, but the weight files hold {stored / 1e9:.2f} billion. "
                            "The config and the weights do not belong together; download the "
                            "model again.")
    problem = undescribed(config, safetensors_shapes(folder))
    if problem:
        raise ModelNotFound(f"{folder}: {problem}. The config and the weights do not belong "
                            "together; download the model again.")


def download(repo_id: str, progress: bool = True, folder: str = "",
             patterns: list[str] | None = None) -> Path:
    """Fetch files of a hub repository into the Hugging Face cache, or find them there, and
    return the folder: a checkpoint's files by default; `patterns` for others; `folder` for
    one folder of it (as prebuilt builds come). The cache comes first: what was downloaded
    once loads offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    patterns = patterns or ([f"{folder}/*"] if folder else HUB_FILES)
    what = f"{repo_id}/{folder}" if folder else repo_id
    try:
        cached = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        # The cache returns the snapshot folder without checking that the files are there.
        if (cached / folder).is_dir() if folder else \
                patterns is not HUB_FILES or has_weights(cached):
            return cached / folder
    except Exception:
        pass  # not cached yet
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFound(f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                            "is set. Download it once while online, or unset HF_HUB_OFFLINE.")
    reason = hub_unreachable()
    if reason:
        raise ModelNotFound(f"Cannot reach the model hub to download {what} ({reason}). "
                            "Connect to the internet, set HF_ENDPOINT to a reachable mirror, or "
                            f"use --model {STAND_IN} / PHI3_AIPC_MODEL={STAND_IN}"
                            + (" (or build the model yourself)." if folder else "."))
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns)) / folder
    except Exception as err:
        raise ModelNotFound(f"Could not download {what}: {type(err).__name__}: {err}. "
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


def safetensors_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a checkpoint's *.safetensors files, read from their headers."""
    import struct

    shapes = {}
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        shapes.update({name: tuple(tensor["shape"]) for name, tensor in header.items()
                       if name != "__metadata__"})
    return shapes


def safetensors_params(folder: Path) -> tuple[int, int, int]:
    """Parameter counts of a checkpoint: all, the embedding table's, the output layer's."""
    import math

    total = embedding = head = 0
    for name, shape in safetensors_shapes(folder).items():
        n = math.prod(shape)
        total += n
        if name.endswith("embed_tokens.weight"):
            embedding += n
        elif name.startswith("lm_head."):
            head += n
    return total, embedding, head


def undescribed(config: dict, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The first tensor whose shape a Phi-3 `config` (its SHAPES already whole numbers) gets
    wrong, as transformers' Phi3ForCausalLM would build it; None when the config describes the
    weights. A config that merely totals about right (a wider layer, fewer heads) is caught
    here, before transformers fails on it with a traceback or an export runs for minutes."""
    for key in ("num_key_value_heads", "head_dim"):  # optional: derived when absent
        value = config.get(key, 1)
        if key == "num_key_value_heads" and value is None:  # transformers: the attention heads
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"config.json's {key} is {value!r}, not a positive whole number"
    layers = {name.split(".")[2] for name in shapes if name.startswith("model.layers.")}
    if len(layers) != config["num_hidden_layers"]:
        return (f"config.json has {config['num_hidden_layers']} layers, the weight files "
                f"{len(layers)}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    vocab, inner = config["vocab_size"], config["intermediate_size"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim", hidden // heads)
    layer = {"input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,),
             "self_attn.qkv_proj.weight": ((heads + 2 * kv_heads) * head_dim, hidden),
             "self_attn.o_proj.weight": (hidden, heads * head_dim),
             "mlp.gate_up_proj.weight": (2 * inner, hidden),
             "mlp.down_proj.weight": (hidden, inner)}
    expected = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
                **{f"model.layers.{n}.{name}": shape for n in sorted(layers)
                   for name, shape in layer.items()}}
    tied = config.get("tie_word_embeddings", False)
    if not tied or "lm_head.weight" in shapes:  # tied: the embedding is the output layer
        expected["lm_head.weight"] = None if tied else (vocab, hidden)
    for name, shape in expected.items():
        if shapes.get(name) != shape:
            held = f"holds {list(shapes[name])}" if name in shapes else "has no such tensor"
            wanted = f"implies {list(shape)}" if shape else "ties it to the embedding"
            return f"for {name} config.json {wanted}; the weight files {held}"
    return None


def safetensors_missing_bytes(path: Path) -> int:
    """How many bytes `path` lacks of what its (readable) header says it holds: 0 when whole."""
    import struct

    with open(path, "rb") as fh:
        length = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(length))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
              default=0)
    return max(0, 8 + length + end - path.stat().st_size)
