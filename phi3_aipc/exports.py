"""The plumbing around an export a notebook makes with the library's own command: where it goes,
whether it fits on this PC, and when the publisher's ready-made build is the better choice.

A notebook types the command itself (`!optimum-cli export openvino ...`, the ORT GenAI model
builder), into `<folder>.partial`, and renames the folder when the command has succeeded, so an
interrupted export is never taken for a finished one. This module only finds the folder and
takes the choice `prebuilt.decide` makes (PHI3_AIPC_PREBUILT).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from filelock import FileLock

from .cache import cache_dir
from .catalog import PREBUILT_PRECISION
from .models import ModelSource, resolve_model, with_weights
from .prebuilt import decide, prebuilt_source
from .processes import run_tool


def export_dir(source: ModelSource, name: str = "") -> Path:
    """The folder for a notebook's export `name` of `source`, or with no name the folder that
    holds them (one per model's content): the notebooks' exports and compiled models go there."""
    digest = hashlib.sha256(source.fingerprint().encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", source.name).strip("-") or "model"
    folder = cache_dir() / "notebooks" / f"{slug}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name if name else folder


def use_prebuilt(route: str, source: ModelSource, device: str,
                 precision: str = PREBUILT_PRECISION,
                 exported: Path | None = None) -> Path | None:
    """The publisher's ready-made build to use instead of exporting, or None; says why.
    `exported`: the folder a notebook's own export goes to, used when it is there.

    It is downloaded once with a progress bar, or found in the Hugging Face cache offline.
    """
    chosen = decide(route, source, device, precision, exported)
    if not chosen.use:
        print(chosen.why)
        return None
    built = prebuilt_source(route, source.name, device)
    print(f"Using the prebuilt build {built.name} ({chosen.why}).\nIt is in {built.path}")
    return built.path


def openvino_int4(source: ModelSource | None = None, device: str = "CPU") -> Path:
    """Notebook 03's int4 export of `source` (None: the default model), for the notebooks that
    need it: the publisher's build for `device` where that is the choice, the folder notebook
    03 made (channel-wise: it suits the NPU too), or made now with the same `optimum-cli`
    command."""
    from .backends.openvino import PRESETS, export_command

    source = source or resolve_model(weights=False)  # the weights only if it is exported
    mine = export_dir(source, "int4-ov")
    final = use_prebuilt("openvino", source, device, exported=mine) or mine
    with FileLock(f"{final}.lock"):  # two notebooks (or test workers) asking at once: one builds
        if not final.exists():
            partial = Path(f"{final}.partial")
            source = with_weights(source)
            run_tool(export_command(source.path, partial, "int4", PRESETS["default"]),
                     "The OpenVINO export", partial)
            partial.rename(final)
    return final


def onnx_int4(source: ModelSource | None = None, provider: str = "cpu") -> Path:
    """Notebook 02's int4 build of `source` for `provider` ("cpu" or "dml"), found or made the
    same way as `openvino_int4`."""
    from .backends.onnxruntime_genai import build_options, builder_command

    source = source or resolve_model(weights=False)  # the weights only if it is built
    mine = export_dir(source, f"int4-{provider}")
    final = use_prebuilt("onnxruntime-genai", source, provider, exported=mine) or mine
    with FileLock(f"{final}.lock"):
        if not final.exists():
            partial = Path(f"{final}.partial")
            source = with_weights(source)
            options = build_options("int4", provider, None, None)
            run_tool(builder_command(source.path, partial, "int4", options,
                                     final.parent / "builder-cache"),
                     "The ONNX Runtime GenAI model builder", partial)
            partial.rename(final)
    return final
