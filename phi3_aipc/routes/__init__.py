"""The routes, by name (registry.py), and how a request becomes a prepared artifact and a session.

A new route is one file in this folder (a `Route` subclass) and one line in REGISTRY: the CLI's
options, doctor, the benchmark and the chat widget ask the route itself for the rest.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ModelNotFound
from ..models import ModelSource, resolve_model, with_weights
from ..prebuilt import CHOICE_ENV, decide
from .base import Route
from .plan import PREBUILT, Plan
from .registry import (
    DEFAULT_ROUTE,
    REGISTRY,
    all_routes,
    artifact_markers,
    cannot_constrain,
    check_route,
    constraining_routes,
    get_route,
)
from .session import GenerationRequest, GenerationResult, Metrics, Session


def installed_routes() -> list[Route]:
    """The routes whose packages are importable in this environment."""
    return [r for r in all_routes() if r.is_installed()]


def prepare_artifact(plan: Plan, model: str | ModelSource | None = None,
                     progress: bool = True) -> tuple[ModelSource, Path]:
    """Find the model (or the publisher's ready-made build) and prepare it as `plan` says."""
    route = get_route(plan.route)
    source = model if isinstance(model, ModelSource) else None
    if not plan.prebuilt:
        source = source or resolve_model(model, progress, weights=False,  # enough to choose
                                         artifacts=artifact_markers())
        check_can_read(route, source.path)
        plan = prebuilt_instead(route, plan, source)
    own = route.own_source(plan, source.name if source else model)
    source = own or with_weights(source, progress)  # exported or loaded: now it needs them
    return source, route.prepare(plan, source)


def check_can_read(route: Route, folder: Path) -> None:
    """Refuse a folder another route made, given to `route`: it is no checkpoint to convert.
    Each route names the file that marks its artifacts (`artifact_marker`)."""
    for maker in all_routes():
        marker = maker.artifact_marker
        if maker.name != route.name and marker and (folder / marker).is_file():
            raise ModelNotFound(f"{folder} is {maker.artifact_kind}, which the {route.name} route "
                                f"cannot read. Use --route {maker.name} with it, or give the "
                                "Hugging Face checkpoint (config.json and *.safetensors) for the "
                                "other routes.")


def prebuilt_instead(route: Route, plan: Plan, source: ModelSource) -> Plan:
    """`plan`, or the plan that takes the publisher's ready-made build where the request names
    none of the route's settings (not even at its default value) and PHI3_AIPC_PREBUILT says
    so (by default: when the export would not fit this PC), as the notebooks do. Says why on
    stderr. Where the memory check has run, the export does not run it again.
    --skip-preflight asks to export whatever the estimate says: the plan is kept."""
    if PREBUILT.name not in {o.name for o in route.options} or not plan.is_default:
        return plan  # settings of one's own: an export of one's own
    if plan.skip_preflight:
        return plan  # "export even when it will not fit": an export, never a download
    chosen = decide(route.name, source, plan.device, plan.precision,
                    exported=route.export_folder(plan, source))
    if not chosen.use:
        return plan.but(skip_preflight=True) if chosen.fits_checked else plan
    print(f"Using the publisher's prebuilt {route.name} build of {source.name} ({chosen.why}); "
          f"{CHOICE_ENV}=no exports instead.", file=sys.stderr, flush=True)
    return plan.as_prebuilt()


def prepare(route: str, precision: str | None = None, device: str | None = None,
            model: str | ModelSource | None = None, progress: bool = True,
            **prepare_options) -> Path:
    """The artifact folder of `model` for a route: what `phi3-aipc prepare` prints."""
    plan = get_route(route).plan(precision, device, prepare_options)
    return prepare_artifact(plan, model, progress)[1]


def open_session(route: str = DEFAULT_ROUTE, precision: str | None = None,
                 device: str | None = None, model: str | ModelSource | None = None,
                 progress: bool = True, prepare_options: dict | None = None,
                 load_options: dict | None = None) -> Session:
    """Check the request, find the model, prepare it for the route and load it on the device.

    `prepare_options` and `load_options` are the route's own settings (for example OpenVINO's
    `group_size` or `emulate_npu`); a route refuses options it does not have.
    """
    chosen = get_route(route)
    plan = chosen.plan(precision, device, prepare_options, load_options)
    source, artifact = prepare_artifact(plan, model, progress)
    return chosen.load(plan, artifact, source.name)


def library_caches() -> list[tuple[str, Path, str]]:
    """(route, folder, what) for the folders routes' libraries fill themselves."""
    return [(r.name, folder, what) for r in all_routes() for folder, what in r.library_caches()]


__all__ = ["GenerationRequest", "GenerationResult", "Metrics", "Plan", "Route", "Session",
           "DEFAULT_ROUTE", "REGISTRY", "get_route", "all_routes", "artifact_markers",
           "check_route", "cannot_constrain", "constraining_routes", "installed_routes",
           "prepare", "prepare_artifact", "open_session", "library_caches"]
