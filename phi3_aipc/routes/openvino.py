"""The OpenVINO route: export and quantize with optimum-intel, generate with OpenVINO GenAI.

prepare() runs `optimum-cli export openvino` (the command a learner would type) with explicit
weight-compression settings, checks that the result loads and generates, and records how it was
made. load() opens `openvino_genai.LLMPipeline` on CPU, GPU, NPU or AUTO. Without an NPU, the
NPU pipeline can still be run, emulated on the CPU by the NPU plugin, when asked for explicitly.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

from ..cache import cache_dir, read_manifest
from ..catalog import MODELS, NPU_EXPORT, base_device, known
from ..chat import stop_token_ids
from ..errors import BadInput, DeviceUnavailable, ModelNotFound
from ..structured import refused_schema
from .base import Route, Verdict, WeightsRead
from .plan import PREBUILT, SKIP_PREFLIGHT, Option, Plan
from .session import GenerationRequest, GenerationResult, Session, Streamer, TokenStream

NPU_DEFAULTS = {"max_prompt_len": 1024, "min_response_len": 128}  # OpenVINO GenAI's own
# How the NPU plugin runs its pipeline on the CPU (as OpenVINO GenAI's own NPU tests do).
NPU_EMULATION = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU", "NPUW_ONLINE_PIPELINE": "NONE"}
EMULATED_NPU = "NPU (emulated on CPU)"  # the device, as results and the benchmark name it
# The pipeline's properties that also shape the logits of the model compiled beside it.
LOGITS_PROPERTIES = ("KV_CACHE_PRECISION", "INFERENCE_PRECISION_HINT",
                     "DYNAMIC_QUANTIZATION_GROUP_SIZE", "INFERENCE_NUM_THREADS", "CACHE_DIR")


class OpenVINOSession(Session):
    def __init__(self, plan: Plan, artifact: Path, model: str, pipe=None,
                 properties: dict | None = None) -> None:
        """`properties`: OpenVINO properties on top of the route's own (the defaults sweep)."""
        import openvino_genai as ov_genai
        from transformers import AutoConfig

        made = check_export(artifact)
        if plan.device == "NPU":  # before compiling: a refusal now, not after a long compile
            check_npu_ready(artifact, model, bool(plan.load_options.get("emulate_npu")))
        config = {**pipeline_config(plan, made), **(properties or {})}
        self.artifact, self.properties, self._request = artifact, config, None
        start = time.perf_counter()
        self.pipe = pipe or self._load(lambda: ov_genai.LLMPipeline(str(artifact), plan.device,
                                                                    **config), plan.device)
        load_s = time.perf_counter() - start
        self.context_window = AutoConfig.from_pretrained(artifact).max_position_embeddings
        self.prompt_limit = config.get("MAX_PROMPT_LEN")
        self.stops = set(stop_token_ids(artifact))
        emulated = plan.load_options.get("emulate_npu")
        super().__init__(plan, model, load_s, EMULATED_NPU if emulated else plan.device)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The chat template and tokenizer of OpenVINO GenAI itself: what the pipeline feeds
        the model (the template renders the special tokens, so none are added)."""
        import openvino_genai as ov_genai

        tokenizer = self._pipeline().get_tokenizer()
        text = tokenizer.apply_chat_template(ov_genai.ChatHistory(messages),
                                             add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]
        return [int(i) for i in ids]

    def _generate(self, messages: list[dict], prompt: list[int], request: GenerationRequest,
                  streamer: Streamer | None) -> GenerationResult:
        import openvino_genai as ov_genai

        pipe = self._pipeline()
        config = pipe.get_generation_config()
        config.max_new_tokens = request.max_new_tokens
        config.ignore_eos = request.ignore_eos
        config.do_sample = not request.greedy
        if not request.greedy:
            config.temperature, config.top_p = request.temperature, request.top_p
            config.rng_seed = (request.seed if request.seed is not None
                               else int.from_bytes(os.urandom(4), "little"))
        if request.json_schema is not None:
            config.structured_output_config = ov_genai.StructuredOutputConfig(
                json_schema=request.json_schema)
        detok = pipe.get_tokenizer()
        stream = TokenStream(detok.decode, self.stops, request.ignore_eos, streamer)
        try:
            pipe.generate(ov_genai.ChatHistory(messages), config,
                          collecting_streamer_class()(stream))
        except RuntimeError as err:
            if "MAX_PROMPT_LEN" in str(err):
                raise BadInput(f"The NPU pipeline refused the prompt: {npu_reason(err)}") from None
            raise refused_schema(err) or err from None
        # Timed by the same clock as every other route (tokens as they reach us), so that routes
        # compare fairly; the pipeline's own result.perf_metrics measure from inside it.
        return self.result(stream, len(prompt))

    def _load(self, load, device: str):
        try:
            return load()
        except RuntimeError as err:
            raise DeviceUnavailable(f"OpenVINO could not load {self.artifact.name} on {device}: "
                                    f"{str(err).strip().splitlines()[-1]}") from None

    def _pipeline(self):
        """The pipeline, loaded again if `logits` let it go: one compiled copy at a time."""
        if self.pipe is None:
            import openvino_genai as ov_genai

            self._request = None
            self.pipe = self._load(lambda: ov_genai.LLMPipeline(
                str(self.artifact), self.plan.device, **self.properties), self.plan.device)
        return self.pipe

    def logits(self, ids: list[int]):
        """The exported model itself, compiled on the same device (on the CPU for the NPU,
        whose pipeline only generates), since the pipeline gives no logits: one window from an
        empty state. The pipeline is let go meanwhile, so that one compiled copy is held."""
        import numpy as np

        request = self._scorer()
        request.reset_state()
        n = len(ids)
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32)}
        names = {name for port in request.model_inputs for name in port.get_names()}
        request.infer({k: v for k, v in feed.items() if k in names})
        return request.get_tensor("logits").data[0].copy()

    def _scorer(self):
        if self._request is None:
            import openvino as ov

            config = {k: v for k, v in self.properties.items() if k in LOGITS_PROPERTIES}
            device = self.plan.device
            if device.startswith("NPU"):
                device = "CPU"
                self.logits_note = ("The NPU pipeline gives no logits: its export was read on "
                                    "the CPU (the same weights).")
            self.pipe = None
            compiled = self._load(lambda: ov.Core().compile_model(
                str(self.artifact / "openvino_model.xml"), device, config), device)
            self._request = compiled.create_infer_request()
        return self._request

    def close(self) -> None:
        self.pipe = self._request = None


def pipeline_config(plan: Plan, made: dict) -> dict:
    """LLMPipeline properties for the plan's device."""
    config: dict = {}
    if plan.device.startswith(("GPU", "NPU")):
        config["CACHE_DIR"] = str(compiled_cache(bool(plan.load_options.get("emulate_npu"))))
    if made.get("precision") == "fp32" and plan.device == "CPU":
        # fp32 means fp32 here. The CPU plugin keeps the KV cache in u8 by default, even for an
        # fp32 model (the Phi-3-mini-4k stand-in's greedy reply left transformers' at its 11th
        # token, where the top two logits were 0.006 apart), and on a CPU with AMX or
        # AVX512-BF16 it computes in bf16 by default (the stand-ins' replies left transformers'
        # on such a machine).
        config["KV_CACHE_PRECISION"] = "f32"
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if plan.device == "NPU":
        config["MAX_PROMPT_LEN"] = plan.load_options["max_prompt_len"]
        config["MIN_RESPONSE_LEN"] = plan.load_options["min_response_len"]
        if plan.load_options.get("emulate_npu"):
            config.update(NPU_EMULATION)
    return config


@functools.cache
def collecting_streamer_class():
    """A StreamerBase that passes each generated token id to a TokenStream (ids, timing, text).

    Defined on first use, so that importing this module does not need openvino_genai.
    """
    import openvino_genai as ov_genai

    class CollectingStreamer(ov_genai.StreamerBase):
        def __init__(self, stream: TokenStream) -> None:
            super().__init__()
            self.stream = stream

        def write(self, token):
            for token_id in token if isinstance(token, list) else [token]:
                if self.stream.push(int(token_id)):
                    return ov_genai.StreamingStatus.STOP
            return ov_genai.StreamingStatus.RUNNING

        def end(self) -> None:
            pass

    return CollectingStreamer


def npu_reason(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if "NPU" in line or "MAX_PROMPT_LEN" in line]
    return " ".join(line.strip() for line in lines) or str(err)


@functools.cache
def available_devices() -> list[str]:
    """The devices OpenVINO sees, asked once per process (it takes a moment)."""
    import openvino as ov

    return list(ov.Core().available_devices)


def device_report() -> dict:
    """Devices the OpenVINO runtime reports, with their names and (NPU/GPU) driver versions."""
    if importlib.util.find_spec("openvino") is None:
        return {"devices": [], "error": "openvino is not installed"}
    try:
        import openvino as ov

        core = ov.Core()
        devices = []
        for name in available_devices():
            entry = {"name": name, "full_name": core.get_property(name, "FULL_DEVICE_NAME"),
                     "driver_version": None}
            for prop in ("NPU_DRIVER_VERSION", "GPU_DRIVER_VERSION"):
                try:
                    entry["driver_version"] = str(core.get_property(name, prop))
                except Exception:  # property not offered by this device
                    pass
            devices.append(entry)
        return {"devices": devices, "error": None}
    except Exception as err:  # a broken install should be reported, not crash doctor
        return {"devices": [], "error": f"{type(err).__name__}: {err}"}


def check_device(device: str, emulate_npu: bool = False, max_prompt_len: int | None = None,
                 min_response_len: int | None = None) -> None:
    """Refuse a device this PC lacks (naming the ones it has) or settings that don't fit it."""
    if emulate_npu and device != "NPU":
        raise BadInput("emulate_npu (--emulate-npu) goes with device NPU only.")
    if device != "NPU" and (max_prompt_len or min_response_len):
        raise BadInput("max_prompt_len and min_response_len are NPU settings; use them with "
                       "device NPU.")
    for name, value in (("max_prompt_len", max_prompt_len),
                        ("min_response_len", min_response_len)):
        if value is not None and value < 1:
            raise BadInput(f"{name} must be at least 1; got {value}.")
    found = available_devices()
    if device.startswith(("GPU", "NPU")) and device not in found \
            and device not in {base_device(d) for d in found} and not emulate_npu:
        hint = (" For a PC without an NPU, emulate_npu (--emulate-npu) runs OpenVINO's NPU "
                "pipeline on the CPU, for learning (its timings are CPU timings)."
                if device == "NPU" else " Install Intel's GPU driver if this PC has an Intel GPU.")
        raise DeviceUnavailable(f"No {device} found: OpenVINO sees {', '.join(found)}.{hint}")


def compiled_cache_root() -> Path:
    """The folder of the compiled-model caches, one subfolder per OpenVINO and NPU driver."""
    return cache_dir() / "openvino-compiled"


def compiled_cache(emulated: bool = False) -> Path:
    """Where OpenVINO keeps models compiled for the GPU and NPU (CACHE_DIR): a folder per
    OpenVINO version and NPU driver, so that an upgrade of either compiles afresh instead of
    loading blobs the old one made."""
    return compiled_cache_root() / compile_cache_name(openvino_version(), npu_driver(emulated))


def compile_cache_name(openvino: str, driver: str) -> str:
    """The compile cache's folder name for an OpenVINO version (`openvino.get_version()`) and
    an NPU driver version ("none" without an NPU, "emulated" for the emulated one)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"openvino-{openvino}-npu-{driver}")


def openvino_version() -> str:
    import openvino

    return openvino.get_version()


def npu_driver(emulated: bool = False) -> str:
    """The NPU driver's version as the NPU reports it (NPU_DRIVER_VERSION); "emulated" for
    the NPU pipeline run on the CPU, "none" on a PC without an NPU."""
    if emulated:
        return "emulated"
    if "NPU" not in available_devices():
        return "none"
    try:
        return str(npu_property("NPU_DRIVER_VERSION"))
    except Exception:  # an NPU plugin that does not offer it
        return "unknown"


def npu_property(name: str):
    """A property of this PC's NPU, e.g. NPU_DRIVER_VERSION or DEVICE_ARCHITECTURE."""
    import openvino as ov

    return ov.Core().get_property("NPU", name)


def npu_architecture() -> str | None:
    """What the NPU reports as its DEVICE_ARCHITECTURE ("3720", "4000", ...); None without a
    real NPU to ask."""
    if "NPU" not in available_devices():
        return None
    try:
        return str(npu_property("DEVICE_ARCHITECTURE"))
    except Exception:
        return None


# What OpenVINO GenAI's NPU guide says LLMs "must" be exported with: symmetric 4-bit weights
# (int4; NF4 only on Lunar Lake NPUs and newer, channel-wise), one scale per output channel or
# per 128 weights, and every layer that can be in 4 bits in 4 bits (docs.openvino.ai, "OpenVINO
# GenAI on NPU"); catalog.NPU_EXPORT is the export that meets it.
NPU_GROUP_SIZES = (-1, 128)
# The NPU's DEVICE_ARCHITECTURE: 3720 on Core Ultra series 1 (Meteor Lake) and Arrow Lake, 4000
# on Core Ultra 200V (Lunar Lake), higher after it. NF4 needs 4000 or newer.
NF4_NPU_ARCHITECTURE = 4000


def check_npu_ready(folder: Path, model: str, emulated: bool = False) -> None:
    """Refuse, before anything is compiled for the NPU (real or emulated), an export whose
    weights the NPU cannot take, as the model itself records them."""
    settings = weight_compression(folder)
    if settings is None:
        return
    if settings.get("group_size") is None:  # 4-bit, but how is not recorded: let it try
        print(f"Note: {folder.name} does not record how its weights were compressed, so it "
              f"could not be checked for the NPU; if compiling fails, export it with "
              f"{NPU_EXPORT}.", file=sys.stderr)
        return
    problem = npu_problem(settings, None if emulated else npu_architecture())
    if problem:
        raise BadInput(not_ready_message(model, settings, problem))


def npu_problem(settings: dict, architecture: str | None) -> str | None:
    """Why the NPU cannot take weights compressed as `settings` (weight_compression's reading),
    or None. `architecture`: the NPU's DEVICE_ARCHITECTURE (None: no NPU to ask, as when it is
    emulated). 8-bit and uncompressed weights are not this check's business."""
    mode, group, ratio = settings.get("mode"), settings.get("group_size"), settings.get("ratio")
    if mode is None or str(mode).startswith("int8"):
        return None
    if mode == "nf4":
        number = re.search(r"\d{4}", architecture or "")
        if number is None or int(number[0]) < NF4_NPU_ARCHITECTURE:
            where = (f"this NPU reports architecture {architecture}" if architecture else
                     "there is no NPU to ask here (an emulated NPU cannot say)")
            return (f"NF4 weights, which only NPUs of Core Ultra 200V (Lunar Lake) and newer "
                    f"take, and {where}")
        if group != -1:
            return f"NF4 in groups of {group}: NF4 must be channel-wise (group size -1) on the NPU"
    elif mode == "int4_asym":
        return "asymmetric int4 (int4_asym)"
    elif mode != "int4_sym":
        return f"{mode} weights, and the NPU takes symmetric int4 (or NF4 on Lunar Lake)"
    if group not in NPU_GROUP_SIZES:
        return f"int4 in groups of {group}"
    if ratio is not None and ratio < 1:
        return (f"only {ratio:.0%} of its layers in 4 bits (--ratio {ratio}; the rest are "
                "int8)")
    return None


def not_ready_message(model: str, settings: dict, problem: str) -> str:
    """The one-line refusal: what is wrong, where it was read, and the export that works."""
    entry = known(model) or next((m for m in MODELS.values()
                                  if any(p.repo == model for p in m.prebuilt)), None)
    fix = (f"optimum-cli export openvino --model {entry.id if entry else '<model>'} --task "
           f"text-generation-with-past {NPU_EXPORT} <folder>")
    if entry and entry.npu_build():
        alternative = (f"; or OpenVINO's NPU build of {entry.id}, {entry.npu_build().repo} "
                       "(--prebuilt --device NPU)")
    elif entry:
        alternative = f"; {entry.id} has no NPU-ready build published ({entry.npu_note})"
    else:
        alternative = ""
    return (f"{model} is not ready for the NPU: {problem} ({settings.get('source')}). "
            f"The NPU needs symmetric int4 weights, channel-wise or in groups of 128, in every "
            f"layer. An export that works: {fix} (or phi3-aipc prepare --route openvino "
            f"--device NPU){alternative}.")


def weight_compression(folder: Path) -> dict | None:
    """How an export's weights were compressed, read from the model itself: {"mode", "group_size",
    "ratio", "source"}, or None when it records nothing (no compressed weights, or a model made
    by some other tool).

    First NNCF's own record, the runtime info `nncf/weight_compression` it writes into
    openvino_model.xml (mode such as int4_sym, int4_asym, nf4 or int8_asym; group_size; ratio),
    which optimum-cli exports have. Then the `quantization_config` that optimum-intel 1.x wrote
    to openvino_config.json (bits, sym, group_size, ratio, dtype): optimum-intel 2.x's CLI
    writes only its quant_method there.
    """
    import openvino as ov

    xml = folder / "openvino_model.xml"
    model = ov.Core().read_model(str(xml))  # the weights are mapped, not read
    path = ["nncf", "weight_compression"]
    if model.has_rt_info([*path, "mode"]):
        def value(key: str, kind, default):
            if not model.has_rt_info([*path, key]):
                return default
            try:
                return kind(model.get_rt_info([*path, key]).astype(str))
            except ValueError:
                return default
        return {"mode": value("mode", str, None), "group_size": value("group_size", int, -1),
                "ratio": value("ratio", float, 1.0),
                "source": "as NNCF's record in its openvino_model.xml says"}
    try:
        config = json.loads((folder / "openvino_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    settings = settings_from_config(config) if isinstance(config, dict) else None
    if settings:
        return {**settings, "source": "as its openvino_config.json says"}
    four_bit = {"u4", "i4", "nf4", "f4e2m1"}
    if any(op.get_type_name() == "Constant"
           and op.get_output_element_type(0).get_type_name() in four_bit
           for op in model.get_ops()):
        return {"mode": "4-bit, settings not recorded", "group_size": None, "ratio": None,
                "source": "its weights' types"}
    return None


def settings_from_config(config: dict) -> dict | None:
    """The weight compression an openvino_config.json records (optimum-intel's
    OVWeightQuantizationConfig: bits, sym, group_size, ratio, dtype or weight_format), as
    NNCF's names; None if it records none."""
    top = config.get("quantization_config")
    if not isinstance(top, dict):
        return None
    nested = top.get("quantization_configs") if isinstance(top.get("quantization_configs"),
                                                           dict) else {}
    found = next((c for c in (top, nested.get("model"), top.get("default_config"),
                              top.get("weight_quantization_config"))
                  if isinstance(c, dict) and c.get("bits")), None)
    if found is None:
        return None
    bits = found["bits"]
    dtype = str(found.get("dtype") or found.get("weight_format") or f"int{bits}").lower()
    if dtype in ("int4", "int8"):
        mode = f"int{bits}_{'sym' if found.get('sym') else 'asym'}"
    else:
        mode = dtype  # nf4, mxfp4, cb4, ...
    group = found.get("group_size")
    if group is None:  # optimum-intel's default: groups of 128 in 4 bits, per channel in 8
        group = 128 if bits == 4 else -1
    ratio = found.get("ratio")
    return {"mode": mode, "group_size": int(group),
            "ratio": float(1.0 if ratio is None else ratio)}


# int4 weight-compression presets, named for their purpose.
PRESETS = {
    # CPU and GPU: symmetric, channel-wise int4 for every layer (the embedding and lm_head stay
    # int8). Chosen by scripts/sweep_defaults.py: on the CPU it decoded ~10% faster than groups
    # of 128 and kept every stand-in reply (docs/benchmark.md, 'How the defaults were chosen').
    # Symmetric and channel-wise, the same export also suits the NPU.
    "default": {"sym": True, "group_size": -1, "ratio": 1.0},
    # Finer scales, one per 128 weights: closer to the original weights, a little slower here.
    "grouped": {"sym": True, "group_size": 128, "ratio": 1.0},
    # The reference material's command: 60% of the layers int4, the rest int8.
    "reference": {"sym": True, "group_size": 128, "ratio": 0.6},
    # The NPU: symmetric, channel-wise (one scale per output channel), every layer int4.
    "npu": {"sym": True, "group_size": -1, "ratio": 1.0},
}
PRESET_HELP = ", ".join(
    f"{name} (--sym --group-size {p['group_size']} --ratio {p['ratio']})"
    for name, p in PRESETS.items())
EXPORT_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml",
                "openvino_detokenizer.xml")


def weight_options(precision: str, preset: str | None = None, sym: bool | None = None,
                   group_size: int | None = None, ratio: float | None = None,
                   dataset: str | None = None, awq: bool = False,
                   scale_estimation: bool = False, num_samples: int | None = None,
                   all_layers: bool = False) -> dict:
    """The full, explicit weight-compression settings for an export."""
    if preset is not None and preset not in PRESETS:
        raise BadInput(f"Unknown preset {preset!r}; presets: {', '.join(PRESETS)}.")
    if precision in ("fp16", "fp32"):
        given = [k for k, v in dict(preset=preset, sym=sym, group_size=group_size, ratio=ratio,
                                    dataset=dataset, num_samples=num_samples).items()
                 if v is not None]
        if given or awq or scale_estimation or all_layers:
            raise BadInput(f"{', '.join(given) or 'awq/scale_estimation/all_layers'} only apply to "
                           f"int4/int8 exports, not {precision}.")
        return {}
    if precision == "int8":
        if preset or group_size is not None or ratio is not None or dataset or awq \
                or scale_estimation or num_samples or all_layers:
            raise BadInput("int8 exports are per-channel: only sym/asym can be chosen.")
        return {"sym": bool(sym)}
    options = dict(PRESETS[preset or "default"])
    for key, value in (("sym", sym), ("group_size", group_size), ("ratio", ratio)):
        if value is not None:
            options[key] = value
    if not 0 < options["ratio"] <= 1:
        raise BadInput(f"ratio must be in (0, 1]; got {options['ratio']}.")
    size = options["group_size"]
    if size != -1 and (size < 16 or size & (size - 1)):  # nncf's groups must divide the layers
        raise BadInput(f"group_size must be -1 (per channel) or a power of two from 16 (16, 32, "
                       f"64, 128, ...); got {size}.")
    if (awq or scale_estimation or num_samples) and not dataset:
        raise BadInput("AWQ, scale estimation and num_samples need calibration data: add a dataset "
                       "(--dataset auto generates it from the model itself; wikitext2 downloads "
                       "it).")
    if dataset:
        options.update(dataset=dataset, awq=awq, scale_estimation=scale_estimation,
                       num_samples=num_samples)
    if all_layers:  # only when asked: the key of every other export stays as it was
        options["all_layers"] = True
    return options


def export_command(source: Path, out: Path | str, precision: str, options: dict) -> list[str]:
    """The `optimum-cli export openvino` command for these settings."""
    cmd = ["optimum-cli", "export", "openvino", "--model", str(source),
           "--task", "text-generation-with-past", "--weight-format", precision]
    if options.get("sym"):
        cmd.append("--sym")
    if "group_size" in options:
        cmd += ["--group-size", str(options["group_size"]), "--ratio", str(options["ratio"])]
    cmd += ["--all-layers"] if options.get("all_layers") else []
    if options.get("dataset"):
        cmd += ["--dataset", options["dataset"]]
    cmd += ["--awq"] if options.get("awq") else []
    cmd += ["--scale-estimation"] if options.get("scale_estimation") else []
    if options.get("num_samples"):
        cmd += ["--num-samples", str(options["num_samples"])]
    return cmd + [str(out)]


def check_export(folder: Path) -> dict:
    """Refuse a folder that is not a finished OpenVINO export; return its manifest (or {})."""
    missing = [f for f in EXPORT_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelNotFound(
            f"{folder} is not an OpenVINO export (missing {', '.join(missing)}). Create one with "
            "`phi3-aipc prepare --route openvino --precision int4`, or `optimum-cli export "
            "openvino --model <model> --weight-format int4 <folder>` with openvino-tokenizers "
            "installed.")
    return read_manifest(folder)


def openvino_weights(folder: Path) -> tuple[int, int, int]:
    """Bytes of all constants of the IR, of those behind the embedding lookup, and of those of
    the output layer (the other constants with a vocabulary-sized first dimension)."""
    import openvino as ov

    model = ov.Core().read_model(str(folder / "openvino_model.xml"))
    vocab = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    constants = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    size = {c.get_friendly_name(): c.get_byte_size() for c in constants}
    embedding: set[str] = set()
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        found, stack = set(), [op.input_value(0).get_node()]
        while stack:  # walk up through the decompression ops to the stored constants
            node = stack.pop()
            if node.get_friendly_name() in found:
                continue
            if node.get_type_name() == "Constant":
                found.add(node.get_friendly_name())
            elif node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
                stack += [value.get_node() for value in node.input_values()]
        if sum(size[n] for n in found) > sum(size[n] for n in embedding):
            embedding = found
    vocab_sized = [c for c in constants if c.get_friendly_name() not in embedding
                   and list(c.get_output_shape(0))[:1] == [vocab]]
    return (sum(size.values()), sum(size[n] for n in embedding),
            sum(c.get_byte_size() for c in vocab_sized))


class OpenVINORoute(Route):
    name = "openvino"
    precisions = ("int4", "int8", "fp16", "fp32")
    devices = ("CPU", "GPU", "NPU", "AUTO")
    default_precision = "int4"
    default_device = "CPU"
    modules = ("openvino", "openvino_genai", "openvino_tokenizers", "optimum.intel")
    packages = ("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf")
    install_hint = 'python -m pip install -e ".[openvino]"'
    doctor_key = "openvino"
    artifact_marker, artifact_kind = "openvino_model.xml", "an OpenVINO export"
    export_tool = "The OpenVINO export"
    # StructuredOutputConfig: the grammar masks the logits in the pipeline's sampler, on the
    # host, whatever the device; checked here on the CPU and on the NPU pipeline emulated on it
    # (tests/test_structured.py), not on a GPU.
    constrained_devices = devices
    options = (
        Option("preset", "prepare", f"int4 settings: {PRESET_HELP}; default: default",
               choices=tuple(PRESETS)),
        Option("sym", "prepare", "symmetric weight quantization", bool, off="--asym",
               off_help="asymmetric weight quantization"),
        Option("group_size", "prepare", "int4 group size (-1: per channel)", int),
        Option("ratio", "prepare", "share of layers in int4 (the rest int8)", float),
        Option("dataset", "prepare", "calibration data for AWQ/scale estimation (auto: "
               "generated by the model; wikitext2: downloaded)"),
        Option("awq", "prepare", "activation-aware quantization", bool),
        Option("scale_estimation", "prepare", "scale estimation (with --dataset)", bool),
        Option("num_samples", "prepare", "calibration samples (with --dataset)", int),
        Option("all_layers", "prepare", "int4 also for the embedding and output layers (int8 "
               "otherwise; optimum-cli's --all-layers)", bool),
        PREBUILT,
        SKIP_PREFLIGHT,
        Option("emulate_npu", "load", "on a PC without an NPU, run OpenVINO's NPU pipeline "
               "emulated on the CPU (labelled as such)", bool),
        Option("max_prompt_len", "load", "NPU: longest prompt (default "
               f"{NPU_DEFAULTS['max_prompt_len']})", int),
        Option("min_response_len", "load", "NPU: room for the reply (default "
               f"{NPU_DEFAULTS['min_response_len']})", int),
    )

    def choose_device(self, device: str | None) -> tuple[str, list[str]]:
        """Also take a numbered GPU as OpenVINO lists it (GPU.0, GPU.1 with two GPUs)."""
        if isinstance(device, str) and device.upper().startswith("GPU."):
            return device.upper(), []
        return super().choose_device(device)

    def refine(self, plan: Plan) -> Plan:
        prepared: dict = {}
        if not plan.prebuilt:
            options = dict(plan.prepare_options)
            if plan.precision == "int4" and plan.device == "NPU" and "preset" not in options:
                options["preset"] = "npu"  # the NPU's export, unless asked otherwise
            prepared = weight_options(plan.precision, **options)
            if plan.device == "NPU" and plan.precision == "int4":  # refused before exporting
                asked = {"mode": "int4_sym" if prepared["sym"] else "int4_asym",
                         "group_size": prepared["group_size"], "ratio": prepared["ratio"],
                         "source": "as asked"}
                problem = npu_problem(asked, None)
                if problem:
                    raise BadInput(not_ready_message("This int4 export", asked, problem))
        load = dict(plan.load_options)
        check_device(plan.device, **load)
        notes = list(plan.notes)
        if plan.device == "NPU":
            load.setdefault("max_prompt_len", NPU_DEFAULTS["max_prompt_len"])
            load.setdefault("min_response_len", NPU_DEFAULTS["min_response_len"])
            if load.get("emulate_npu"):
                notes.append("NPU pipeline emulated on the CPU (NPUW_DEVICES=CPU): NPU behaviour "
                             "and limits, CPU speed. These timings are not NPU timings.")
        return plan.but(prepare_options=prepared, load_options=load, notes=tuple(notes))

    def devices_here(self) -> list[str]:
        """What OpenVINO lists (CPU first), e.g. ['CPU', 'GPU', 'NPU'] on an AI PC."""
        found = [d for d in available_devices() if base_device(d) in ("CPU", "GPU", "NPU")]
        return sorted(found, key=lambda d: d != "CPU")

    def picker_devices(self) -> list[str]:
        return [*super().picker_devices(), "AUTO"]  # AUTO: OpenVINO picks the device itself

    def load_options_to_prepare(self, device: str | None) -> dict:
        """The NPU's export is made without an NPU too (to copy to a PC that has one):
        preparing only writes files, so the NPU's absence is no obstacle."""
        if (device or "").upper() != "NPU":
            return {}
        return {"emulate_npu": "NPU" not in self.devices_here()}

    def facts(self) -> dict:
        return device_report()

    def facts_lines(self, facts: dict) -> list[str]:
        lines = ["", "OpenVINO devices"]
        for d in facts["devices"]:
            driver = f"  driver {d['driver_version']}" if d["driver_version"] else ""
            lines.append(f"  {d['name']:8} {d['full_name']}{driver}")
        return lines + ([f"  ({facts['error']})"] if facts["error"] else [])

    def verdict(self, facts: dict, versions: dict) -> Verdict:
        names = {base_device(d["name"]) for d in facts.get("devices", [])}
        if not (versions.get("openvino-genai") and versions.get("optimum-intel")):
            return Verdict("missing", "openvino-genai or optimum-intel is missing.",
                           self.install_hint)
        if names & {"GPU", "NPU"}:
            return Verdict("ready", f"OpenVINO devices: {', '.join(sorted(names))}.")
        return Verdict("cpu-only", "OpenVINO sees only the CPU. For the GPU or NPU, install "
                       "Intel's GPU/NPU drivers (see docs/troubleshooting.md, 'The NPU is not "
                       "listed, or \"No more devices are left\"').")

    def bench_configs(self, max_prompt_len: int) -> list[dict]:
        """Every precision on every device here; without an NPU, the NPU pipeline emulated on
        the CPU (labelled, never ranked)."""
        configs = super().bench_configs(max_prompt_len)
        if "NPU" not in self.devices_here():
            configs.append({"precision": "int4", "device": "NPU", "emulated_as": EMULATED_NPU,
                            "load_options": {"emulate_npu": True,
                                             "max_prompt_len": max_prompt_len}})
        return configs

    def weights_read(self, artifact: Path, precision: str) -> WeightsRead:
        total, embedding, head = openvino_weights(artifact)
        return WeightsRead((total - embedding) / 1e6, head / 1e6, "OpenVINO IR constants")

    def library_caches(self) -> list[tuple[Path, str]]:
        return [(compiled_cache_root(), "compiled-model blobs, per OpenVINO and NPU driver")]

    def export_command(self, source: Path, out: Path | str, plan: Plan,
                       scratch: Path | None = None) -> list[str]:
        return export_command(source, out, plan.precision, dict(plan.prepare_options))

    def check_artifact(self, folder: Path, precision: str | None = None) -> None:
        made = check_export(folder)
        if precision and made.get("precision", precision) != precision:
            raise BadInput(f"{folder} is a {made['precision']} export, not {precision}.")

    def smoke_test(self, folder: Path) -> None:
        """An export counts as finished only once it loads and generates a token."""
        import openvino_genai as ov_genai

        ov_genai.LLMPipeline(str(folder), "CPU").generate("Hi", max_new_tokens=1)

    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        return OpenVINOSession(plan, artifact, model)

    def adopt(self, plan: Plan, loaded, artifact: Path, model: str) -> Session:
        """A session around an `openvino_genai.LLMPipeline` loaded from `artifact`."""
        return OpenVINOSession(plan, artifact, model, pipe=loaded)
