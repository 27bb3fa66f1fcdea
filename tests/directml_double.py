"""DirectML's refusal to continue a live generator, reproduced on the CPU.

On a Windows AI PC, onnxruntime-genai-directml (0.13.1) refuses `append_tokens` on a generator
that already holds tokens: Generator::AppendTokens (src/generators.cpp of
microsoft/onnxruntime-genai) allows "continuous decoding" only where the KV cache is on the CPU,
CUDA, WebGPU, OpenVINO, NvTensorRtRtx or RyzenAI, and throws std::runtime_error otherwise,
which the Python binding (pybind11) raises as RuntimeError. The wheel here has no DirectML, so
`install()` makes the real library, running on the CPU, behave as the DirectML build does:

- `og.is_dml_available()` says True, so a notebook picks the "dml" provider;
- `og.Config.append_provider("dml")` is recorded and not applied: the model runs on the CPU;
- `og.Generator` is the real generator, except that `append_tokens` on a generator that holds
  tokens raises RuntimeError with the library's own message (device type "DirectML", its
  to_string of DeviceType::DML);
- the route's `directml_status()` says DirectML is there, so `device="dml"` is accepted.

Everything else is the real library. `LOG` counts what happened, for the tests to check that
the double was in the way. In a test, `install(monkeypatch)` undoes itself; in a notebook
kernel, `install()` at startup (see KERNEL_STARTUP) patches before the first cell runs.
"""
from __future__ import annotations

from pathlib import Path

import onnxruntime_genai as og

MESSAGE = ("Continuous decoding is not supported on the selected device type (DirectML). "
           "Please recreate the generator instance to avoid using continuous decoding.")
LOG = {"generators": 0, "appended": 0, "refused": 0, "dml_providers": 0}
ROOT = Path(__file__).resolve().parents[1]
# Run at a notebook kernel's start (IPKernelApp.exec_lines): the double, before any cell.
KERNEL_STARTUP = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                  "from tests.directml_double import install; install()")


class DirectMLGenerator(og.Generator):
    """The real generator, refusing continuous decoding as it does on DirectML."""

    def __init__(self, model, params) -> None:
        super().__init__(model, params)
        LOG["generators"] += 1

    def append_tokens(self, tokens) -> None:
        # The library checks emptiness and max_length first (the real call raises those), then
        # whether the sequence is already under way.
        if len(tokens) and self.token_count() != 0:
            LOG["refused"] += 1
            raise RuntimeError(MESSAGE)
        super().append_tokens(tokens)
        LOG["appended"] += 1


class DirectMLConfig(og.Config):
    """The real config; the DirectML provider is taken note of, and the CPU runs the model."""

    def append_provider(self, provider: str) -> None:
        if provider.lower() == "dml":
            LOG["dml_providers"] += 1
            return
        super().append_provider(provider)


def install(monkeypatch=None) -> None:
    """Put the double in place: with pytest's `monkeypatch` (undone after the test), or for
    good (a notebook kernel)."""
    from phi3_aipc.routes import onnxruntime_genai as route

    def put(target, name, value):
        if monkeypatch is not None:
            monkeypatch.setattr(target, name, value)
        else:
            setattr(target, name, value)

    put(og, "Generator", DirectMLGenerator)
    put(og, "Config", DirectMLConfig)
    put(og, "is_dml_available", lambda: True)
    put(route, "directml_status", lambda: (True, ""))
    LOG.update(dict.fromkeys(LOG, 0))
