"""phi3_aipc: the plumbing behind the phi3-aipc notebooks (Phi-3-mini on Intel AI PCs).

The few names a notebook needs:

    from phi3_aipc import open_session, build_messages
    with open_session("transformers", model="stand-in") as session:
        print(session.generate(build_messages("Can you introduce yourself?")).text)
"""
from .catalog import DEFAULT_MODEL
from .chat import build_messages
from .errors import BadInput, DeviceUnavailable, ModelNotFound, Phi3AipcError
from .models import STAND_IN, resolve_model
from .routes import GenerationRequest, get_route, installed_routes, open_session, prepare

__version__ = "0.1.0"
__all__ = ["open_session", "prepare", "get_route", "installed_routes", "GenerationRequest",
           "build_messages", "resolve_model", "DEFAULT_MODEL", "STAND_IN", "Phi3AipcError",
           "BadInput", "DeviceUnavailable", "ModelNotFound"]
