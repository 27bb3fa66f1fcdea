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


@dataclass(frozen=True)
class Prebuilt:
    """A ready-made build on the hub: `repo` (and the `subfolder` that holds the model)."""

    route: str
    repo: str
    subfolder: str = ""
    precision: str = "int4"
    devices: tuple[str, ...] = ()  # what it is made for, in the route's device names
    settings: str = ""  # how it was quantized, as its model card says


@dataclass(frozen=True)
class Model:
    id: str
    short: str  # the name in "stand-in:<short>"
    config: Mapping  # architecture fields of its config.json
    parameters_b: float  # billions of parameters, as published
    prebuilt: tuple[Prebuilt, ...] = ()
    note: str = ""

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
LONGROPE_128K = dict(max_position_embeddings=131072, original_max_position_embeddings=4096,
                     rope_scaling_type="longrope", rope_factors=48)

ORT_CPU_INT4 = "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"

MODELS: dict[str, Model] = {m.id: m for m in [
    Model("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k",
          dict(PHI3_MINI, max_position_embeddings=4096, original_max_position_embeddings=4096,
               sliding_window=2047),
          3.82,
          prebuilt=(
              Prebuilt("openvino", "OpenVINO/Phi-3-mini-4k-instruct-int4-ov",
                       devices=("CPU", "GPU")),
              Prebuilt("openvino", "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov", devices=("NPU",),
                       settings="symmetric, channel-wise: the NPU's"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-3-mini-4k-instruct-onnx",
                       "directml/directml-int4-awq-block-128", devices=("dml",),
                       settings="AWQ, block 128"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-3-mini-4k-instruct-onnx",
                       ORT_CPU_INT4, devices=("cpu",), settings="RTN, block 32, int8 activations"),
          ),
          note="the reference material's model; a 4k-token window"),
    Model("microsoft/Phi-3-mini-128k-instruct", "phi-3-mini-128k",
          dict(PHI3_MINI, **LONGROPE_128K, sliding_window=262144), 3.82,
          prebuilt=(
              Prebuilt("openvino", "OpenVINO/Phi-3-mini-128k-instruct-int4-ov",
                       devices=("CPU", "GPU"), settings="asymmetric, group 128, ratio 0.8"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-3-mini-128k-instruct-onnx",
                       ORT_CPU_INT4, devices=("cpu",), settings="RTN, block 32, int8 activations"),
          ),
          note="LongRoPE: a 128k window; long factors take over past 4096 tokens"),
    Model("microsoft/Phi-3.5-mini-instruct", "phi-3.5-mini",
          dict(PHI3_MINI, **LONGROPE_128K, sliding_window=262144), 3.82,
          prebuilt=(
              Prebuilt("openvino", "OpenVINO/Phi-3.5-mini-instruct-int4-ov",
                       devices=("CPU", "GPU")),
              Prebuilt("openvino", "OpenVINO/Phi-3.5-mini-instruct-int4-cw-ov", devices=("NPU",),
                       settings="symmetric, channel-wise: the NPU's"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-3.5-mini-instruct-onnx",
                       "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4", devices=("cpu",),
                       settings="AWQ, block 128, int8 activations"),
          ),
          note="LongRoPE, 128k window, multilingual"),
    Model("microsoft/Phi-4-mini-instruct", "phi-4-mini",
          dict(PHI3_MINI, **LONGROPE_128K, vocab_size=200064, num_attention_heads=24,
               num_key_value_heads=8, partial_rotary_factor=0.75, tie_word_embeddings=True),
          3.84,
          prebuilt=(
              Prebuilt("openvino", "OpenVINO/Phi-4-mini-instruct-int4-ov", devices=("CPU", "GPU"),
                       settings="asymmetric, group 64, AWQ and scale estimation"),
              Prebuilt("onnxruntime-genai", "microsoft/Phi-4-mini-instruct-onnx", ORT_CPU_INT4,
                       devices=("cpu",), settings="RTN, block 32, int8 activations"),
          ),
          note="grouped-query attention (24 query, 8 key/value heads), partial rotary 0.75, "
               "tied embeddings, a 200k vocabulary, LongRoPE"),
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
