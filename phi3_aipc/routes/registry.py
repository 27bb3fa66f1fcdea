"""The routes, by name, and what is asked of all of them at once. A route's module is imported
only when it is asked for, so this sits below the routes and the sessions they load: a session
asks here which routes can hold a reply to a JSON schema without importing the routes' floor."""
from __future__ import annotations

import importlib

from ..errors import BadInput
from ..structured import FLAG

# name -> "module:class".
DEFAULT_ROUTE = "transformers"  # the reference every other route is checked against
REGISTRY = {
    "transformers": "phi3_aipc.routes.transformers:TransformersRoute",
    "openvino": "phi3_aipc.routes.openvino:OpenVINORoute",
    "onnxruntime-genai": "phi3_aipc.routes.onnxruntime_genai:OnnxRuntimeGenAIRoute",
    "npu-library": "phi3_aipc.routes.npu_library:NPULibraryRoute",
}


def get_route(name: str):
    """The route called `name`, e.g. "openvino" (a `base.Route`, which is not imported here:
    base.py imports the session, which imports this)."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise BadInput(f"Unknown route {name!r}. Available: {', '.join(REGISTRY)}.")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def all_routes() -> list:
    return [get_route(name) for name in REGISTRY]


def artifact_markers() -> tuple[str, ...]:
    """The files that mark the routes' prepared artifacts (each route's `artifact_marker`)."""
    return tuple(r.artifact_marker for r in all_routes() if r.artifact_marker)


def check_route(route: str, device: str | None) -> None:
    """Refuse, before anything is exported or loaded, a route or device (None: the route's
    default) whose library cannot hold a reply to a schema."""
    refusal = cannot_constrain(route, get_route(route).choose_device(device)[0])
    if refusal:
        raise refusal


def constraining_routes() -> str:
    """The routes that can hold a reply to a JSON schema and on which devices, e.g.
    "openvino (CPU, GPU, NPU); onnxruntime-genai (dml, cpu)": each route says (its
    `constrained_devices`)."""
    return "; ".join(f"{r.name} ({', '.join(r.constrained_devices)})" for r in all_routes()
                     if r.constrained_devices)


def cannot_constrain(route: str, device: str) -> BadInput | None:
    """Why `route` cannot hold a reply to a JSON schema on `device`, naming the routes and
    devices that can; None when it can."""
    if get_route(route).can_constrain(device):
        return None
    able = constraining_routes()
    where = f" on {device}" if get_route(route).constrained_devices else ""
    return BadInput(f"The {route} route cannot hold a reply to a JSON schema{where}; {FLAG} "
                    f"works with the routes {able}.")
