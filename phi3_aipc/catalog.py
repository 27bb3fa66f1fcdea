"""The models these notebooks know, in one table: a new model is one entry here.

Each entry holds the architecture fields of the model's real `config.json` (from its model
page), what that means in size and memory, and the ready-made builds its publishers offer per
route. The CLI's help, the default model, the bench stand-in's shapes and the memory checks read
it. Any other Phi-3-family checkpoint (model_type "phi3") still works by hub id or folder; the
catalog only adds what is known about these.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

FAMILY = ("phi3",)  # the config.json model_type every route here is written for
# The export OpenVINO GenAI's NPU guide asks for (symmetric int4, channel-wise, every layer).
NPU_EXPORT = "--weight-format int4 --sym --group-size -1 --ratio 1.0"
PREBUILT_PRECISION = "int4"  # what every publisher's ready-made build here is


def base_device(device: str) -> str:
    """A device without its number: "GPU" for OpenVINO's "GPU.1" (builds are made per kind)."""
    return device.split(".")[0]


@dataclass(frozen=True)
class Prebuilt:
    """A ready-made build on the hub: `repo` (and the `subfolder` that holds the model)."""

    route: str
    repo: str
    subfolder: str = ""
    precision: str = PREBUILT_PRECISION
    devices: tuple[str, ...] = ()  # what it is made for, in the route's device names
    settings: str = ""  # how it was quantized, as its model card says

    def made_for(self, device: str) -> bool:
        return base_device(device) in self.devices


@dataclass(frozen=True)
class Model:
    id: str
    short: str  # the name in "stand-in:<short>"
    config: Mapping  # architecture fields of its config.json
    parameters_b: float  # billions of parameters, as published
    prebuilt: tuple[Prebuilt, ...] = ()
    note: str = ""
    # Routes and devices its stand-in is checked on by the tests (tests/test_family.py and the
    # route tests); what is not listed has not been run, which is not to say it fails.
    checked: tuple[str, ...] = ()
    # Where no published OpenVINO build suits the NPU: why (the NPU's builds are Prebuilt
    # entries with "NPU" among their devices).
    npu_note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    @property
    def context_window(self) -> int:
        return self.config["max_position_embeddings"]

    @property
    def layers(self) -> int:
        return self.config["num_hidden_layers"]

    @property
    def bf16_gb(self) -> float:
        """Its checkpoint's size (bf16: 2 bytes a weight)."""
        return weight_count(self.config) * 2 / 1e9

    @property
    def export_ram_gb(self) -> float:
        """What converting it takes: the model in fp32 plus about 1 GB for the converter."""
        return weight_count(self.config) * 4 / 1e9 + 1

    def prebuilt_for(self, route: str) -> tuple[Prebuilt, ...]:
        return tuple(p for p in self.prebuilt if p.route == route)

    def npu_build(self) -> Prebuilt | None:
        """The published OpenVINO build made for the NPU, if there is one."""
        return next((p for p in self.prebuilt_for("openvino") if "NPU" in p.devices), None)

    def npu_advice(self) -> str:
        """Its NPU-ready build, or that there is none and the export that makes one."""
        build = self.npu_build()
        if build:
            return f"NPU-ready build: {build.repo} ({build.settings})"
        return (f"no NPU-ready build is published ({self.npu_note}); make one with: optimum-cli "
                f"export openvino --model {self.id} --task text-generation-with-past "
                f"{NPU_EXPORT} <folder>")


def weight_count(config: Mapping) -> int:
    """The number of weights of a Phi-3-family model, from its config.json (grouped-query
    attention, tied embeddings and the norms included: the published parameter count)."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    per_layer = (hidden * heads * head_dim  # q
                 + 2 * hidden * kv_heads * head_dim  # k, v
                 + heads * head_dim * hidden  # o
                 + 3 * hidden * config["intermediate_size"])  # gate, up, down
    tables = 1 if config.get("tie_word_embeddings") else 2  # embedding (and lm_head)
    norms = (2 * layers + 1) * hidden
    return layers * per_layer + tables * config["vocab_size"] * hidden + norms


PHI3_MINI = dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 tie_word_embeddings=False)
# LongRoPE: one factor per rotary frequency (48 = half of the 96 rotary dimensions) for the
# short (up to original_max_position_embeddings) and the long regime, from the config.json files.
PHI35_LONGROPE = {"type": "longrope", "long_factor": [
    1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601,
    1.5899999141693115, 1.600000023841858, 1.6200000047683716, 2.620000123977661,
    3.2300000190734863, 3.2300000190734863, 4.789999961853027, 7.400000095367432,
    7.700000286102295, 9.09000015258789, 12.199999809265137, 17.670000076293945,
    24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
    32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992,
    50.340003967285156, 50.45000457763672, 57.55000305175781, 57.93000411987305,
    58.21000289916992, 60.1400032043457, 62.61000442504883, 62.62000274658203,
    62.71000289916992, 63.1400032043457, 63.1400032043457, 63.77000427246094,
    63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
    64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938,
    64.4800033569336, 64.51000213623047, 64.52999877929688, 64.83999633789062],
    "short_factor": [
    1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705, 1.0499999523162842,
    1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0499999523162842,
    1.0699999332427979, 1.0999999046325684, 1.1099998950958252, 1.1599998474121094,
    1.1599998474121094, 1.1699998378753662, 1.2899998426437378, 1.339999794960022,
    1.679999828338623, 1.7899998426437378, 1.8199998140335083, 1.8499997854232788,
    1.8799997568130493, 1.9099997282028198, 1.9399996995925903, 1.9899996519088745,
    2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
    2.0199997425079346, 2.0199997425079346, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0799996852874756,
    2.0899996757507324, 2.189999580383301, 2.2199995517730713, 2.5899994373321533,
    2.729999542236328, 2.749999523162842, 2.8399994373321533]}
PHI4_LONGROPE = {"type": "longrope", "long_factor": [
    1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817,
    2.187582649, 2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023,
    4.785517845, 5.351743533, 5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372,
    10.4687158, 11.70738129, 13.09260651, 14.64173252, 16.37415215, 18.31155283, 20.47818807,
    22.90118105, 25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6, 32.61, 32.64,
    32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77],
    "short_factor": [1.0] * 48}
LONGROPE_128K = dict(max_position_embeddings=131072, original_max_position_embeddings=4096)
PHI35_128K = dict(PHI3_MINI, **LONGROPE_128K, rope_scaling=PHI35_LONGROPE, sliding_window=262144)

ROUTES_CHECKED = ("transformers", "openvino CPU (fp32 = transformers)",
                  "onnxruntime-genai cpu (fp32 = transformers)")
ORT_CPU_INT4 = "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"


def ort_cpu_build(name: str) -> Prebuilt:
    """Microsoft's ONNX build of `name` for the CPU: RTN int4, blocks of 32, int8 activations."""
    return Prebuilt("onnxruntime-genai", f"microsoft/{name}-onnx", ORT_CPU_INT4, devices=("cpu",),
                    settings="RTN, block 32, int8 activations")


def openvino_builds(name: str) -> tuple[Prebuilt, Prebuilt]:
    """OpenVINO's two int4 builds of `name`: for the CPU and GPU, and the NPU's (-cw-)."""
    return (Prebuilt("openvino", f"OpenVINO/{name}-int4-ov", devices=("CPU", "GPU")),
            Prebuilt("openvino", f"OpenVINO/{name}-int4-cw-ov", devices=("NPU",),
                     settings="symmetric, channel-wise: the NPU's"))


MODELS: dict[str, Model] = {m.id: m for m in [
    Model("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k",
          dict(PHI3_MINI, max_position_embeddings=4096, original_max_position_embeddings=4096,
               sliding_window=2047),
          3.82,
          prebuilt=(
              *openvino_builds("Phi-3-mini-4k-instruct"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-3-mini-4k-instruct-onnx",
                       "directml/directml-int4-awq-block-128", devices=("dml",),
                       settings="AWQ, block 128"),
              ort_cpu_build("Phi-3-mini-4k-instruct"),
          ),
          note="the reference material's model; a 4k-token window",
          checked=(*ROUTES_CHECKED, "openvino NPU (emulated)", "npu-library (CPU fallback)")),
    Model("microsoft/Phi-3-mini-128k-instruct", "phi-3-mini-128k",
          # Its own factors could not be read here (no model hub); its stand-in takes
          # Phi-3.5-mini's, which have the same length and the same switch at 4096 tokens.
          PHI35_128K,
          3.82,
          prebuilt=(
              Prebuilt("openvino", "OpenVINO/Phi-3-mini-128k-instruct-int4-ov",
                       devices=("CPU", "GPU"), settings="asymmetric, group 128, ratio 0.8"),
              ort_cpu_build("Phi-3-mini-128k-instruct"),
          ),
          note="LongRoPE: a 128k window; long factors take over past 4096 tokens",
          checked=ROUTES_CHECKED,
          npu_note="OpenVINO's int4 build is asymmetric, group 128, ratio 0.8"),
    Model("microsoft/Phi-3.5-mini-instruct", "phi-3.5-mini",
          PHI35_128K,
          3.82,
          prebuilt=(
              *openvino_builds("Phi-3.5-mini-instruct"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-3.5-mini-instruct-onnx",
                       "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4", devices=("cpu",),
                       settings="AWQ, block 128, int8 activations"),
          ),
          note="LongRoPE, 128k window, multilingual", checked=ROUTES_CHECKED),
    Model("microsoft/Phi-4-mini-instruct", "phi-4-mini",
          dict(PHI3_MINI, **LONGROPE_128K, rope_scaling=PHI4_LONGROPE, vocab_size=200064,
               num_attention_heads=24, num_key_value_heads=8, partial_rotary_factor=0.75,
               tie_word_embeddings=True, sliding_window=262144),
          3.84,
          prebuilt=(
              Prebuilt("openvino", "OpenVINO/Phi-4-mini-instruct-int4-ov", devices=("CPU", "GPU"),
                       settings="asymmetric, group 64, AWQ and scale estimation"),
              ort_cpu_build("Phi-4-mini-instruct"),
          ),
          note="grouped-query attention (24 query, 8 key/value heads), partial rotary 0.75, "
               "tied embeddings, a 200k vocabulary, LongRoPE",
          checked=(*ROUTES_CHECKED, "openvino NPU (emulated)"),
          npu_note="OpenVINO's int4 build is asymmetric, group 64"),
]}
DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"


def known(model_id: str) -> Model | None:
    """The catalog's entry for a hub id (None for one it does not list)."""
    return MODELS.get(model_id)


def default() -> Model:
    return MODELS[DEFAULT_MODEL]


def describe() -> str:
    """One line per known model, for help texts."""
    return "; ".join(f"{m.id} ({m.context_window // 1024}k)" for m in MODELS.values())
