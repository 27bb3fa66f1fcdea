"""The routes, by name. A route's module is imported only when it is asked for."""
from __future__ import annotations

import importlib

from ..errors import BadInput
from ..models import ModelSource, resolve_model
from .base import Backend, GenerationResult, Metrics, Session

# name -> "module:class". The route issues add openvino, onnxruntime-genai and npu-library here.
REGISTRY = {
    "transformers": "phi3_aipc.backends.transformers:TransformersBackend",
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


def open_session(backend: str = "transformers", precision: str | None = None,
                 device: str | None = None, model: str | ModelSource | None = None,
                 progress: bool = True) -> Session:
    """Check the request, find the model, prepare it for the route and load it on the device."""
    route = get_backend(backend)
    precision, device = route.check(precision, device)
    source = model if isinstance(model, ModelSource) else resolve_model(model, progress=progress)
    artifact = route.prepare(source, precision)
    return route.load(artifact, device, precision, source.name)


__all__ = ["Backend", "GenerationResult", "Metrics", "Session", "get_backend",
           "installed_backends", "open_session", "REGISTRY"]
