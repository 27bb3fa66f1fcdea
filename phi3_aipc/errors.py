"""The package's own exceptions: each message says what was wrong and what to do."""


class Phi3AipcError(Exception):
    """Base class. The CLI prints the message on one line and exits with code 2."""


class BadInput(Phi3AipcError, ValueError):
    """An argument that cannot work: empty prompt, unknown precision, too long a prompt, ..."""


class ModelNotFound(Phi3AipcError):
    """A model source that cannot be found, downloaded or read as Phi-3."""


class DeviceUnavailable(Phi3AipcError):
    """A device or route that this PC (or this Python environment) does not have."""


class InsufficientResources(Phi3AipcError):
    """An export that will not fit in this PC's free memory or disk."""
