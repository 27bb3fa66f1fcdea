"""The routes, by name. A route's module is imported only when it is asked for."""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import BadInput
from ..models import ModelSource, resolve_model
from .base import Backend, GenerationResult, Metrics, Session

# name -> "module:class".
REGISTRY = {
    "transformers": "phi3_aipc.backends.transformers:TransformersBackend",
    "openvino": "phi3_aipc.backends.openvino:OpenVINOBackend",
    "onnxruntime-genai": "phi3_aipc.backends.onnxruntime_genai:OnnxRuntimeGenAIBackend",
    "npu-library": "phi3_aipc.backends.npu_library:NPULibraryBackend",
}


def get_backend(name: str) -> Backend:
    """The route called `name`, e.g. "transformers"."""
    if name not in REGISTRY:
        raise BadInput(f"Unknown backend {name!r}. Available: {', '.join(REGISTRY)}.")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def installed_backends() -> list[Backend]:
    """The routes whose packages are importable in this environment."""
    return [b for b in map(get_backend, REGISTRY) if b.is_installed()]


def prepare_artifact(route: Backend, precision: str, device: str,
                     model: str | ModelSource | None, options: dict,
                     progress: bool = True) -> tuple[ModelSource, Path]:
    """Find the model (or the route's own ready-made one) and prepare it for the route."""
    source = route.own_source(**options)
    if source is None:
        source = model if isinstance(model, ModelSource) else resolve_model(model, progress)
    return source, route.prepare(source, precision, device, **options)


def open_session(backend: str = "transformers", precision: str | None = None,
                 device: str | None = None, model: str | ModelSource | None = None,
                 progress: bool = True, prepare_options: dict | None = None,
                 load_options: dict | None = None) -> Session:
    """Check the request, find the model, prepare it for the route and load it on the device.

    `prepare_options` and `load_options` are the route's own settings (for example OpenVINO's
    `group_size` or `emulate_npu`); a route refuses options it does not have.
    """
    route = get_backend(backend)
    prepare_options, load_options = prepare_options or {}, load_options or {}
    route.check_options(prepare_options, load_options)
    precision, device = route.check(precision, device)
    route.check_load(device, **load_options)
    source, artifact = prepare_artifact(route, precision, device, model, prepare_options,
                                        progress)
    return route.load(artifact, device, precision, source.name, **load_options)


__all__ = ["Backend", "GenerationResult", "Metrics", "Session", "get_backend",
           "installed_backends", "open_session", "prepare_artifact", "REGISTRY"]
