"""The plumbing around an export a notebook makes with the library's own command: where it goes,
whether it fits on this PC, and when the publisher's ready-made build is the better choice.

A notebook types the command itself (`!optimum-cli export openvino ...`, the ORT GenAI model
builder), into `<folder>.partial`, and renames the folder when the command has succeeded, so an
interrupted export is never taken for a finished one. This module finds the folder, takes the
choice `prebuilt.decide` makes (PHI3_AIPC_PREBUILT), and, for a notebook that needs another
notebook's export, asks the route for the same command and builds through `cache.build_once`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .cache import cache_dir
from .errors import BadInput, ModelNotFound
from .models import ModelSource, resolve_model
from .prebuilt import Choice, decide, prebuilt_source
from .routes import get_route

# The notebooks' own exports are int4 (notebooks 02 and 03 quantize to int4 on the PC, and this
# makes the same with the route's command): their precision, stated here whatever the
# publishers' builds' precision (catalog.PREBUILT_PRECISION) is.
NOTEBOOK_PRECISION = "int4"


def export_dir(source: ModelSource, name: str = "") -> Path:
    """The folder for a notebook's export `name` of `source`, or with no name the folder that
    holds them (one per model's content): the notebooks' exports and compiled models go there."""
    digest = hashlib.sha256(source.fingerprint().encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", source.name).strip("-") or "model"
    folder = cache_dir() / "notebooks" / f"{slug}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name if name else folder


def use_prebuilt(route: str, source: ModelSource, device: str,
                 precision: str = NOTEBOOK_PRECISION,
                 exported: Path | None = None) -> Path | None:
    """The publisher's ready-made build to use instead of exporting, or None; says why.
    `exported`: the folder a notebook's own export goes to, used when it is there.

    It is downloaded once with a progress bar, or found in the Hugging Face cache offline.
    """
    return take(decide(route, source, device, precision, exported), route, source, device)


def take(chosen: Choice, route: str, source: ModelSource, device: str) -> Path | None:
    """The publisher's build where `chosen` says to use it (downloaded or found), else None;
    says why either way."""
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
    return notebook_export("openvino", source, device, "int4-ov")


def onnx_int4(source: ModelSource | None = None, provider: str = "cpu") -> Path:
    """Notebook 02's int4 build of `source` for `provider` ("cpu" or "dml"), found or made the
    same way as `openvino_int4`."""
    return notebook_export("onnxruntime-genai", source, provider, f"int4-{provider}",
                           {"target": provider})


def notebook_export(route_name: str, source: ModelSource | None, device: str, name: str,
                    options: dict | None = None) -> Path:
    """The publisher's build for `device` where that is the choice; else the notebook's export
    `name` of `source` with the route's default int4 settings (and `options`): the one a
    notebook made by hand is checked and sealed on first use, never made again; a missing one
    is made with the route's own command, through the cache's locked, sealed build."""
    source = source or resolve_model(weights=False)  # the weights only if it is exported
    mine = export_dir(source, name)
    chosen = decide(route_name, source, device, NOTEBOOK_PRECISION, exported=mine)
    built = take(chosen, route_name, source, device)
    if built:
        return built
    route = get_route(route_name)
    # Where the choice has checked that the export fits, the export does not check again.
    plan = route.plan(NOTEBOOK_PRECISION, route.default_device, options).but(
        skip_preflight=chosen.fits_checked)
    try:
        return route.build_export(plan, source, mine, adopt=True)
    except ModelNotFound as err:  # a folder of the learner's that is not a finished export
        raise BadInput(f"{err} Once it is deleted, this makes it again (or run the notebook's "
                       "export cell again).") from None
