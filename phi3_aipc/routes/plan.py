"""What a user asks of a route, checked once: a route's settings (`Option`) and the immutable
`Plan` that `Route.plan` makes and that prepare() and load() take."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ..catalog import PREBUILT_PRECISION

PRECISIONS = ("int4", "int8", "fp16", "fp32")


@dataclass(frozen=True)
class Option:
    """A setting of a route, as a keyword of prepare() or load() and as a CLI flag.

    `type` is int, float, str or bool (a flag; `off` names the flag that sets it False, as
    --asym does for sym).
    """

    name: str
    stage: str  # "prepare" or "load"
    help: str
    type: type = str
    choices: tuple = ()
    off: str | None = None
    off_help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PREBUILT = Option("prebuilt", "prepare", f"download the publisher's ready-made "
                  f"{PREBUILT_PRECISION} build of a catalog model for the device instead of "
                  "making one (see `phi3-aipc models`); a request that names none of the "
                  "route's settings takes it by itself when the export would not fit", bool)
SKIP_PREFLIGHT = Option("skip_preflight", "prepare", "export even when the memory/disk estimate "
                        "says it will not fit", bool)
# Options that steer how a plan is carried out rather than what is made: they become the Plan's
# own fields, never part of its prepare_options (nor of the cache key those make).
CONTROLS = (PREBUILT.name, SKIP_PREFLIGHT.name)


def frozen(options: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(options or {}))


@dataclass(frozen=True)
class Plan:
    """A checked request for one route: what to prepare and how to load it, and why.

    Made only by `Route.plan`, which refuses what cannot work here before anything is built;
    `notes` say what was chosen for the user (e.g. the CPU because there is no DirectML).
    `is_default`: the request named none of the route's settings (so the publisher's build may
    serve it); `prebuilt`: take the publisher's build; `skip_preflight`: the memory check is
    waived, or has already run.
    """

    route: str
    precision: str
    device: str
    prepare_options: Mapping = field(default_factory=frozen)
    load_options: Mapping = field(default_factory=frozen)
    notes: tuple[str, ...] = ()
    is_default: bool = False
    prebuilt: bool = False
    skip_preflight: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "prepare_options", frozen(self.prepare_options))
        object.__setattr__(self, "load_options", frozen(self.load_options))

    def but(self, **changes) -> Plan:
        """A copy with some fields changed (a route's own normalization)."""
        return replace(self, **changes)

    def as_prebuilt(self) -> Plan:
        """This plan served by the publisher's build: nothing of its own to make."""
        return self.but(prebuilt=True, prepare_options=frozen())

    @property
    def note(self) -> str:
        return " ".join(self.notes)
