"""The one small interface every route implements, and the values that flow through it.

    plan = route.plan(precision, device, prepare_options, load_options)   # checked once
    artifact = route.prepare(plan, source)                                # convert/quantize
    with route.load(plan, artifact, source.name) as session:              # on the device
        result = session.generate(messages, GenerationRequest(greedy=True))

A route also says what it needs and offers (its CLI options, its doctor verdict, its benchmark
configurations, the weights it reads per token), so that nothing outside its own file needs to
know its name.
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..cache import artifact_dir, build_once, check_given, write_manifest
from ..catalog import PREBUILT_PRECISION, base_device
from ..errors import BadInput, DeviceUnavailable, ModelNotFound
from ..hardware import preflight
from ..models import ModelSource, safetensors_params, with_weights
from ..prebuilt import prebuilt_source
from ..processes import run_tool
from .plan import CONTROLS, Option, Plan
from .session import Session


@dataclass(frozen=True)
class Verdict:
    """A route's state on this PC, for `phi3-aipc doctor`."""

    verdict: str  # "ready" (an accelerator), "cpu-only" (it runs, on the CPU) or "missing"
    detail: str
    fix: str | None = None


VERDICTS = ("ready", "cpu-only", "missing")


@dataclass(frozen=True)
class WeightsRead:
    """Bytes of weights one decoding step reads: all but the embedding table (a token reads one
    row of it); and of those, the output layer's. `how`: where the figure comes from."""

    total_mb: float
    output_layer_mb: float
    how: str


class Route(ABC):
    """A way to run Phi-3: what it offers, how to check a request, prepare and load.

    The core is `plan`, `prepare` and `load` (a route must give `load`, and `prepare` where it
    does not export through the hooks at the end). The extras below them tell the rest of the
    package what only the route knows, so that nothing outside its file names it: its
    facts and verdict for doctor, its benchmark configurations, its cache folders, its
    artifacts' format and its export command.
    """

    name: str
    precisions: tuple[str, ...]
    devices: tuple[str, ...]
    default_precision: str
    default_device: str
    modules: tuple[str, ...] = ()  # Python modules the route needs
    packages: tuple[str, ...] = ()  # pip names of the packages it needs (doctor, manifests)
    install_hint: str = ""  # the command that installs them
    options: tuple[Option, ...] = ()  # its own settings (prepare and load keywords, CLI flags)
    # extras
    doctor_key: str | None = None  # the doctor report's key for `facts()`
    artifact_marker: str | None = None  # a file only this route's artifacts hold
    artifact_kind: str = ""  # what such a folder is, e.g. "an OpenVINO export"
    export_tool: str = ""  # what makes one, e.g. "The OpenVINO export"
    # Devices on which its library can hold a reply to a JSON schema (constrained decoding;
    # phi3-aipc generate --json-schema): none by default.
    constrained_devices: tuple[str, ...] = ()

    # --- the core: is it here, check a request, prepare, load -------------------------------
    def is_installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def plan(self, precision: str | None = None, device: str | None = None,
             prepare_options: Mapping | None = None,
             load_options: Mapping | None = None) -> Plan:
        """Check a request once: options, precision, device, that the route is installed and
        the device is here. Returns the immutable Plan that prepare() and load() take."""
        for name, options in (("prepare_options", prepare_options),
                              ("load_options", load_options)):
            if options is not None and not isinstance(options, Mapping):
                raise BadInput(f"{name} must be a dict of the route's settings; got "
                               f"{type(options).__name__}.")
        prepare_options = {k: v for k, v in (prepare_options or {}).items() if v is not None}
        load_options = {k: v for k, v in (load_options or {}).items() if v is not None}
        for stage, given in (("prepare", prepare_options), ("load", load_options)):
            accepted = {o.name: o for o in self.options if o.stage == stage}
            for key, value in given.items():
                if key not in accepted:
                    flag = "--" + str(key).replace("_", "-")
                    raise BadInput(f"{flag} is not an option of the {self.name} route"
                                   + (f" (its options: {', '.join(accepted)})." if accepted
                                      else "."))
                check_option_type(accepted[key], value)
        controls = {k: prepare_options.pop(k) for k in CONTROLS if k in prepare_options}
        precision = self.check_precision(precision)
        device, notes = self.choose_device(device)
        if not self.is_installed():
            raise DeviceUnavailable(f"The {self.name} route is not installed in this Python "
                                    f"environment. Install it with: {self.install_hint}")
        plan = Plan(self.name, precision, device, prepare_options, load_options, tuple(notes),
                    is_default=not prepare_options, prebuilt=bool(controls.get("prebuilt")),
                    skip_preflight=bool(controls.get("skip_preflight")))
        if plan.prebuilt and (prepare_options or precision != PREBUILT_PRECISION):
            raise BadInput(f"A prebuilt model comes as it is ({PREBUILT_PRECISION}, made for one "
                           "device): leave out the other settings, or make your own without "
                           "--prebuilt.")
        return self.refine(plan)

    def check_precision(self, precision: str | None) -> str:
        if precision is not None and not isinstance(precision, str):
            raise BadInput(f"precision must be a name such as int4; got {precision!r}.")
        precision = (precision or self.default_precision).lower()
        if precision not in self.precisions:
            raise BadInput(f"The {self.name} route offers precisions {', '.join(self.precisions)}; "
                           f"got {precision!r}.")
        return precision

    def choose_device(self, device: str | None) -> tuple[str, list[str]]:
        """The device by its canonical name (None: the route's default), and notes on the
        choice."""
        device = device or self.default_device
        by_lower = {d.lower(): d for d in self.devices}
        if not isinstance(device, str) or device.lower() not in by_lower:
            raise BadInput(f"The {self.name} route runs on {', '.join(self.devices)}; "
                           f"got device {device!r}.")
        return by_lower[device.lower()], []

    def refine(self, plan: Plan) -> Plan:
        """The route's own checks and normalization of a plan (its options, its device being
        here). Refuses what cannot work, before any export."""
        return plan

    def export_folder(self, plan: Plan, source: ModelSource) -> Path:
        """Where the cache keeps `plan`'s export of `source`: keyed by the settings it is made
        with, not by how it was asked for."""
        return artifact_dir(self.name, source.name, source.fingerprint(), plan.precision,
                            dict(plan.prepare_options))

    def own_source(self, plan: Plan, model: str | None) -> ModelSource | None:
        """A ready-made model the route fetches itself (with `prebuilt`: the catalog's build of
        `model` for the plan's device, downloaded or found in the cache), or None."""
        return prebuilt_source(self.name, model, plan.device) if plan.prebuilt else None

    def prepare(self, plan: Plan, source: ModelSource) -> Path:
        """Return a folder holding the model in this route's format, as the plan says: by
        default, `source` itself where it already is one (`artifact_marker`), else the export
        the route's `export_command` makes, once, in the cache. Routes that read the checkpoint
        as it is override it."""
        if self.artifact_marker and (source.path / self.artifact_marker).is_file():
            self.check_artifact(source.path, plan.precision)
            check_given(source.path)
            return source.path
        return self.build_export(plan, source, self.export_folder(plan, source))

    @abstractmethod
    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        """Load a prepared artifact on the plan's device."""

    def adopt(self, plan: Plan, loaded, artifact: Path, model: str) -> Session:
        """A session around a model the caller has already loaded with the route's library
        (a notebook's pipeline), from `artifact`: used as it is, never loaded a second time."""
        raise BadInput(f"The {self.name} route cannot take a model loaded elsewhere; let the "
                       "chat load it (and free yours first).")

    # --- extras: where it runs here (doctor, the device picker, the CLI's prepare) -----------
    def devices_here(self) -> list[str]:
        """The devices this route can use on this PC, the default first. Routes that can ask
        their runtime override it; the others list what they offer."""
        return [self.default_device, *(d for d in self.devices if d != self.default_device)]

    def can_constrain(self, device: str) -> bool:
        """Whether a reply on `device` can be held to a JSON schema (`constrained_devices`)."""
        return base_device(device) in self.constrained_devices

    def picker_devices(self) -> list[str]:
        """What a device picker offers: the devices here, and any the runtime chooses itself."""
        return self.devices_here() if self.is_installed() else [self.default_device]

    def load_options_to_prepare(self, device: str | None) -> dict:
        """Load options that let a plan for `device` be made only to prepare an artifact (to
        copy to a PC that has the device), where this PC lacks it. None by default."""
        return {}

    def facts(self) -> dict:
        """What this route's runtime reports on this PC (doctor's `doctor_key` entry)."""
        return {}

    def facts_lines(self, facts: dict) -> list[str]:
        """`facts()` as lines of the doctor's text report (none by default)."""
        return []

    def verdict(self, facts: dict, versions: dict) -> Verdict | None:
        """The doctor's verdict from `facts()` and package versions (None: not judged)."""
        return None

    # --- extras: the benchmark and the cache ------------------------------------------------
    def bench_configs(self, max_prompt_len: int) -> list[dict]:
        """What `phi3-aipc bench` measures: {precision, device, prepare_options,
        load_options} for each configuration this PC can run."""
        here = self.devices_here()
        return [{"precision": p, "device": d} for d in here for p in self.precisions]

    def memory_gb(self, weights: int, precision: str) -> float:
        """About how much memory the route holds for a model of `weights` weights at
        `precision` while it runs (routes that load more first override it)."""
        per_weight = {"fp32": 4, "fp16": 2, "int8": 1.1, "int4": 0.75}[precision]
        return weights * per_weight * 1.2 / 1e9

    def weights_read(self, artifact: Path, precision: str) -> WeightsRead:
        """Weights read per generated token, counted from the artifact where its format
        allows (the benchmark's roofline)."""
        total, embedding, head = safetensors_params(artifact)
        per_weight = {"fp32": 4, "fp16": 2, "int8": 1, "int4": 0.5}[precision]
        return WeightsRead((total - embedding) * per_weight / 1e6, head * per_weight / 1e6,
                           f"parameter count x {per_weight} bytes (estimate: the library "
                           "quantizes in memory)")

    def library_caches(self) -> list[tuple[Path, str]]:
        """Folders the route's libraries fill themselves (no manifest), with what they hold."""
        return []

    # --- exporting: the hooks `prepare` and the notebooks' helpers (exports.py) use ---------
    def export_command(self, source: Path, out: Path | str, plan: Plan,
                       scratch: Path | None = None) -> list[str]:
        """The library's own command that exports the checkpoint in `source` to `out` as
        `plan` says (`scratch`: a folder for its temporary files)."""
        raise BadInput(f"The {self.name} route makes no export; it reads the checkpoint.")

    def check_artifact(self, folder: Path, precision: str | None = None) -> None:
        """Refuse a folder that is not a finished artifact of this route (at `precision`)."""

    def smoke_test(self, folder: Path) -> None:
        """Load a fresh artifact and generate a token: only then does it count as finished."""

    def build_export(self, plan: Plan, source: ModelSource, final: Path,
                     adopt: bool = False) -> Path:
        """`final`, exported once through `cache.build_once` (locked, sealed, never half-made)
        with the route's command, checked, smoke-tested and recorded. `adopt`: an export
        already there that was made without phi3-aipc (a learner's own, from a notebook) is
        checked and sealed as it is, never made again."""
        precision = plan.precision

        def build(tmp: Path) -> None:
            nonlocal source
            source = with_weights(source)  # a hub model resolved without them: now it needs them
            if not plan.skip_preflight:
                preflight(source.path, precision, f"{self.export_tool} of {source.name} "
                          f"({precision})")
            with tempfile.TemporaryDirectory() as scratch:  # the tool's temporary files
                cmd = self.export_command(source.path, tmp, plan, Path(scratch))
                shown = self.export_command(source.path, "<output>", plan)
                print(f"Building {source.name} ({precision}) for the {self.name} route:\n  "
                      f"{' '.join(shown)}", file=sys.stderr, flush=True)
                run_tool(cmd, self.export_tool, tmp)
            self.check_artifact(tmp, precision)
            self.smoke_test(tmp)
            write_manifest(tmp, route=self.name, source=source, precision=precision,
                           options=dict(plan.prepare_options), command=shown,
                           packages=self.packages)

        def check(folder: Path) -> None:
            """A learner's folder that does not check or load is refused in one line, and
            kept: it is theirs to delete."""
            try:
                self.check_artifact(folder, precision)
                self.smoke_test(folder)
            except Exception as err:  # the library's own error, whatever its type; its last
                # line is the reason (OpenVINO's first names its source file)
                line = (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()
                raise ModelNotFound(f"{folder} is not a finished export: {line}; delete it "
                                    "or pass another folder.") from None

        return build_once(final, build, adopt=check if adopt else None)


def check_option_type(option, value) -> None:
    """A route setting of the type its Option declares (an int is a float too; a bool is
    neither); `choices` are checked where the route has them."""
    wanted = option.type
    if wanted is bool:
        ok = isinstance(value, bool)
    elif wanted is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif wanted is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, wanted)
    if not ok:
        raise BadInput(f"{option.name} must be {wanted.__name__}; got {value!r:.60}.")
    if option.choices and value not in option.choices:
        raise BadInput(f"{option.name} must be one of {', '.join(map(str, option.choices))}; "
                       f"got {value!r:.60}.")
