"""The publishers' ready-made builds: which one serves a route on a device, and when to take it
instead of exporting. Decided here once, below the routes, for the CLI, the chat, the benchmark
and the notebooks alike:

    PHI3_AIPC_PREBUILT=auto  (default) the prebuilt build when the export would not fit here
    PHI3_AIPC_PREBUILT=yes   always the prebuilt build, where the catalog has one
    PHI3_AIPC_PREBUILT=no    always export (the export still says when it will not fit)

Only catalog models from the hub have one (the stand-ins have none), and only in
`catalog.PREBUILT_PRECISION`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .catalog import MODELS, PREBUILT_PRECISION, base_device, known
from .errors import BadInput, InsufficientResources
from .hardware import preflight
from .models import ModelSource, catalog_id, default_model, download

CHOICE_ENV = "PHI3_AIPC_PREBUILT"
CHOICES = ("auto", "yes", "no")


@dataclass(frozen=True)
class Choice:
    """Whether to take the publisher's build, why, and whether the memory check has run (and
    passed: an export then need not check again)."""

    use: bool
    why: str
    fits_checked: bool = False


def choice() -> str:
    value = os.environ.get(CHOICE_ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise BadInput(f"{CHOICE_ENV} is {value!r}; use one of {', '.join(CHOICES)}.")
    return value


def does_not_fit(source: ModelSource, precision: str, what: str) -> str | None:
    """None when exporting `source` at `precision` fits this PC's memory and disk, else why."""
    if not (source.path / "config.json").is_file():
        return None  # not a checkpoint (an export given as the model): nothing to convert
    try:
        preflight(source.path, precision, what)
    except InsufficientResources as err:
        return str(err).split(" Close other programs")[0]
    return None


def decide(route: str, source: ModelSource, device: str, precision: str = PREBUILT_PRECISION,
           exported: Path | None = None) -> Choice:
    """Whether to use the publisher's build of `source` for `route` on `device` instead of
    exporting it (PHI3_AIPC_PREBUILT, whether an export made earlier is in the folder
    `exported`, and whether the export fits here)."""
    wanted = choice()
    entry = known(source.name) if source.kind == "hub" and wanted != "no" else None
    if precision != PREBUILT_PRECISION or not entry or not any(
            b.made_for(device) for b in entry.prebuilt_for(route)):
        return Choice(False, f"No prebuilt {route} build is used for {source.name}: it is "
                      "exported.")
    if wanted == "auto" and exported is not None and exported.is_dir():
        return Choice(False, f"{source.name} was exported before, when it fitted: that export "
                      f"is used ({exported}).")
    reason = does_not_fit(source, precision, f"Exporting {source.name} ({precision})")
    if wanted == "auto" and reason is None:
        return Choice(False, f"Exporting {source.name} fits this PC, so it is exported; "
                      f"{CHOICE_ENV}=yes uses the publisher's build instead.", fits_checked=True)
    return Choice(True, reason or f"{CHOICE_ENV}=yes")


def prebuilt_source(route: str, model: str | None, device: str) -> ModelSource:
    """The catalog's ready-made build of `model` (None: the default model) for `route`, the
    one made for `device` where there are several; downloaded, or found in the cache."""
    name = catalog_id(model or default_model())
    entry = known(name)
    builds = [b for b in entry.prebuilt_for(route) if b.made_for(device)] if entry else []
    if not builds:
        offered = [m.id for m in MODELS.values()
                   if any(b.made_for(device) for b in m.prebuilt_for(route))]
        raise BadInput(f"No prebuilt {route} build for {base_device(device)} is known for "
                       f"{name!r} (there is for {', '.join(offered) or 'no model'}). Leave out "
                       "--prebuilt to make your own.")
    chosen = builds[0]
    path = download(chosen.repo, folder=chosen.subfolder,
                    patterns=None if chosen.subfolder else ["*"])
    return ModelSource("/".join(filter(None, [chosen.repo, chosen.subfolder])), path, "prebuilt")
