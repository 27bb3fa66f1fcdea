"""What the benchmark measures: configurations (a route at a precision on a device) and the
prompts, several distinct ones per length (OpenVINO GenAI reuses work for a prompt it has seen,
which would flatter it)."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import weight_count
from ..routes import REGISTRY, get_route
from ..standin import DATA

PROMPTS_FILE = DATA / "bench_prompts.json"
LENGTHS = (32, 256, 1024)
DECODE_LENGTH = 256  # the prompt length whose decode speed ranks the routes: a typical turn
# Emulating a device is for seeing its code path: the bench stand-in (0.65 B weights) yes,
# Phi-3-mini (3.8 B) not unless asked for by name.
EMULATION_MAX_WEIGHTS = 1.5e9


@dataclass(frozen=True)
class BenchConfig:
    """One thing to measure: a route at a precision on a device, with its own options."""

    route: str
    precision: str
    device: str
    prepare_options: dict = field(default_factory=dict)
    load_options: dict = field(default_factory=dict)
    emulated_as: str = ""  # a device emulated on another, as the route names it

    @property
    def emulated(self) -> bool:
        return bool(self.emulated_as)

    @property
    def label(self) -> str:
        device = self.emulated_as or self.device
        return f"{self.route} {self.precision} {device}"


@functools.cache
def _prompts() -> str:
    return PROMPTS_FILE.read_text(encoding="utf-8")


def load_prompts() -> dict[int, list[dict]]:
    """Benchmark prompts by length: each {"tokens": N, "text": ...}, all different."""
    data = json.loads(_prompts())["prompts"]
    return {int(k): v for k, v in data.items()}


def longest_prompt(lengths) -> int:
    """The most tokens any benchmark prompt of these lengths has (some run a token or two over)."""
    prompts = load_prompts()
    return max(p["tokens"] for n in lengths for p in prompts.get(n, [{"tokens": n}]))


def decode_length(lengths) -> int:
    return DECODE_LENGTH if DECODE_LENGTH in lengths else min(lengths)


def too_big(config: BenchConfig, model_dir: Path) -> str | None:
    """Why `config` should not run with the model in `model_dir` on this PC: it would not fit in
    the free memory, or it is the emulated NPU on a model too big to emulate in reasonable time.
    None when it is fine (or the model's size cannot be told)."""
    import psutil

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    weights = weight_count(json.loads(path.read_text(encoding="utf-8")))
    if config.emulated and weights > EMULATION_MAX_WEIGHTS:
        # Measured at Phi-3-mini's full size: the emulating worker held 9.3 GB (the plugin
        # keeps fp16 copies of the weights) and had not finished the benchmark after 40 minutes.
        return (f"{config.label}: emulating the device on the CPU holds about "
                f"{weights * 2.4 / 1e9:.0f} GB for a model of {weights / 1e9:.1f} B weights and "
                "runs for tens of minutes, for CPU timings; emulate it on a stand-in, or ask for "
                "it by name (phi3-aipc bench --device emulated)")
    need = get_route(config.route).memory_gb(weights, config.precision)
    free = psutil.virtual_memory().available / 1e9
    if need <= free:
        return None
    return f"{config.label} needs about {need:.1f} GB of memory, {free:.1f} GB is free"


def available_configs(routes: list[str] | None = None, precisions: list[str] | None = None,
                      devices: list[str] | None = None,
                      max_prompt_len: int | None = None) -> list[BenchConfig]:
    """Every (route, precision, device) this PC can run, narrowed by the filters. Each route
    says what it offers here (`Route.bench_configs`). The precision "default" stands for each
    route's own default precision; the device "emulated" for an emulated device."""
    chosen = [get_route(name) for name in (routes or REGISTRY)]  # refuses unknown names
    limit = max_prompt_len or longest_prompt(LENGTHS)
    configs = [BenchConfig(route.name, **c) for route in chosen if route.is_installed()
               for c in route.bench_configs(limit)]
    if precisions:
        wanted = [p.lower() for p in precisions]
        defaults = {r.name: r.default_precision for r in chosen}
        configs = [c for c in configs if c.precision in wanted or (
            "default" in wanted and c.precision == defaults[c.route])]
    if devices:
        wanted = [d.lower() for d in devices]
        configs = [c for c in configs if c.device.lower() in wanted
                   or ("emulated" in wanted and c.emulated)]
    return configs
