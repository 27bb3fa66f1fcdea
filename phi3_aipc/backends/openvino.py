"""The OpenVINO route: export and quantize with optimum-intel, generate with OpenVINO GenAI.

prepare() runs `optimum-cli export openvino` (the command a learner would type) with explicit
weight-compression settings, checks that the result loads and generates, and records how it was
made. load() opens `openvino_genai.LLMPipeline` on CPU, GPU, NPU or AUTO. Without an NPU, the
NPU pipeline can still be run, emulated on the CPU by the NPU plugin, when asked for explicitly.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from ..cache import artifact_dir, build_once, cache_dir, check_given, read_manifest, write_manifest
from ..chat import check_fits, check_sampling, prompt_ids, stop_token_ids
from ..errors import BadInput, DeviceUnavailable, ModelNotFound
from ..hardware import preflight
from ..models import ModelSource
from .base import (
    Backend,
    GenerationResult,
    Session,
    Streamer,
    TokenStream,
    run_tool,
)

# int4 weight-compression presets, named for their purpose.
PRESETS = {
    # CPU and GPU: symmetric, channel-wise int4 for every layer (the embedding and lm_head stay
    # int8). Chosen by scripts/sweep_defaults.py: on the CPU it decoded ~10% faster than groups
    # of 128 and kept every stand-in reply (see the README's benchmark section). Symmetric and
    # channel-wise, the same export also suits the NPU.
    "default": {"sym": True, "group_size": -1, "ratio": 1.0},
    # Finer scales, one per 128 weights: closer to the original weights, a little slower here.
    "grouped": {"sym": True, "group_size": 128, "ratio": 1.0},
    # The reference material's command: 60% of the layers int4, the rest int8.
    "reference": {"sym": True, "group_size": 128, "ratio": 0.6},
    # The NPU: symmetric, channel-wise (one scale per output channel), every layer int4.
    "npu": {"sym": True, "group_size": -1, "ratio": 1.0},
}
EXPORT_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml",
                "openvino_detokenizer.xml")
NPU_DEFAULTS = {"max_prompt_len": 1024, "min_response_len": 128}  # OpenVINO GenAI's own
# How the NPU plugin runs its pipeline on the CPU (as OpenVINO GenAI's own NPU tests do).
NPU_EMULATION = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU", "NPUW_ONLINE_PIPELINE": "NONE"}


def weight_options(precision: str, preset: str | None = None, sym: bool | None = None,
                   group_size: int | None = None, ratio: float | None = None,
                   dataset: str | None = None, awq: bool = False,
                   scale_estimation: bool = False, num_samples: int | None = None) -> dict:
    """The full, explicit weight-compression settings for an export."""
    if preset is not None and preset not in PRESETS:
        raise BadInput(f"Unknown preset {preset!r}; presets: {', '.join(PRESETS)}.")
    if precision in ("fp16", "fp32"):
        given = [k for k, v in dict(preset=preset, sym=sym, group_size=group_size, ratio=ratio,
                                    dataset=dataset, num_samples=num_samples).items()
                 if v is not None]
        if given or awq or scale_estimation:
            raise BadInput(f"{', '.join(given) or 'awq/scale_estimation'} only apply to int4/int8 "
                           f"exports, not {precision}.")
        return {}
    if precision == "int8":
        if preset or group_size is not None or ratio is not None or dataset or awq \
                or scale_estimation or num_samples:
            raise BadInput("int8 exports are per-channel: only sym/asym can be chosen.")
        return {"sym": bool(sym)}
    options = dict(PRESETS[preset or "default"])
    for key, value in (("sym", sym), ("group_size", group_size), ("ratio", ratio)):
        if value is not None:
            options[key] = value
    if not 0 < options["ratio"] <= 1:
        raise BadInput(f"ratio must be in (0, 1]; got {options['ratio']}.")
    if options["group_size"] != -1 and options["group_size"] < 1:
        raise BadInput(f"group_size must be -1 (per channel) or positive; got "
                       f"{options['group_size']}.")
    if (awq or scale_estimation or num_samples) and not dataset:
        raise BadInput("AWQ, scale estimation and num_samples need calibration data: add a dataset "
                       "(--dataset auto generates it from the model itself; wikitext2 downloads "
                       "it).")
    if dataset:
        options.update(dataset=dataset, awq=awq, scale_estimation=scale_estimation,
                       num_samples=num_samples)
    return options


def export_command(source: Path, out: Path, precision: str, options: dict) -> list[str]:
    """The `optimum-cli export openvino` command for these settings."""
    cmd = ["optimum-cli", "export", "openvino", "--model", str(source),
           "--task", "text-generation-with-past", "--weight-format", precision]
    if options.get("sym"):
        cmd.append("--sym")
    if "group_size" in options:
        cmd += ["--group-size", str(options["group_size"]), "--ratio", str(options["ratio"])]
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
            "`phi3-aipc prepare --backend openvino --precision int4`, or `optimum-cli export "
            "openvino --model <model> --weight-format int4 <folder>` with openvino-tokenizers "
            "installed.")
    return read_manifest(folder)


class OpenVINOBackend(Backend):
    name = "openvino"
    precisions = ("int4", "int8", "fp16", "fp32")
    devices = ("CPU", "GPU", "NPU", "AUTO")
    default_precision = "int4"
    default_device = "CPU"
    modules = ("openvino", "openvino_genai", "openvino_tokenizers", "optimum.intel")
    install_hint = 'python -m pip install -e ".[openvino]"'
    prepare_options = ("preset", "sym", "group_size", "ratio", "dataset", "awq",
                       "scale_estimation", "num_samples", "skip_preflight")
    load_options = ("emulate_npu", "max_prompt_len", "min_response_len")

    def prepare(self, source: ModelSource, precision: str, device: str | None = None,
                **options) -> Path:
        skip_preflight = options.pop("skip_preflight", False)
        if precision == "int4" and device == "NPU" and "preset" not in options:
            options["preset"] = "npu"  # the NPU's export, unless asked otherwise
        if (source.path / "openvino_model.xml").is_file():  # already an export: use it
            made = check_export(source.path)
            check_given(source.path)
            if made.get("precision", precision) != precision:
                raise BadInput(f"{source.path} is a {made['precision']} export, not {precision}.")
            return source.path
        settings = weight_options(precision, **options)
        final = artifact_dir(self.name, source.name, source.fingerprint(), precision, settings)

        def build(tmp: Path) -> None:
            if not skip_preflight:
                preflight(source.path, precision, f"Exporting {source.name} to OpenVINO "
                          f"{precision}")
            cmd = export_command(source.path, tmp, precision, settings)
            print(f"Exporting {source.name} to OpenVINO {precision} {settings or ''}:\n  "
                  f"{' '.join(cmd[:-1])} {final}", file=sys.stderr, flush=True)
            run_tool(cmd, "The OpenVINO export", tmp)
            check_export(tmp)
            smoke_test(tmp)
            write_manifest(tmp, route=self.name, source=source, precision=precision,
                           options=settings, command=cmd[:-1] + ["<output>"],
                           packages=("openvino", "openvino-genai", "optimum-intel", "nncf"))

        return build_once(final, build)

    def devices_here(self) -> list[str]:
        """What OpenVINO lists (CPU first), e.g. ['CPU', 'GPU', 'NPU'] on an AI PC."""
        found = [d for d in available_devices() if d.split(".")[0] in ("CPU", "GPU", "NPU")]
        return sorted(found, key=lambda d: d != "CPU")

    def check(self, precision: str | None, device: str | None) -> tuple[str, str]:
        """Also take a numbered GPU as OpenVINO lists it (GPU.0, GPU.1 with two GPUs)."""
        if device and device.upper().startswith("GPU."):
            precision, _ = super().check(precision, "GPU")
            return precision, device.upper()
        return super().check(precision, device)

    def check_load(self, device: str, **load_options) -> None:
        check_device(device, **load_options)

    def load(self, artifact: Path, device: str, precision: str, model: str,
             emulate_npu: bool = False, max_prompt_len: int | None = None,
             min_response_len: int | None = None) -> Session:
        return OpenVINOSession(artifact, device, precision, model, emulate_npu,
                               max_prompt_len, min_response_len)


def smoke_test(folder: Path) -> None:
    """An export counts as finished only once it loads and generates a token."""
    import openvino_genai as ov_genai

    pipe = ov_genai.LLMPipeline(str(folder), "CPU")
    pipe.generate("Hi", max_new_tokens=1)


def available_devices() -> list[str]:
    import openvino as ov

    return ov.Core().available_devices


def check_device(device: str, emulate_npu: bool = False, max_prompt_len: int | None = None,
                 min_response_len: int | None = None) -> None:
    """Refuse a device this PC lacks (naming the ones it has) or settings that don't fit it."""
    if emulate_npu and device != "NPU":
        raise BadInput("emulate_npu (--emulate-npu) goes with device NPU only.")
    if device != "NPU" and (max_prompt_len or min_response_len):
        raise BadInput("max_prompt_len and min_response_len are NPU settings; use them with "
                       "device NPU.")
    found = available_devices()
    if device.startswith(("GPU", "NPU")) and device not in found \
            and device not in {d.split(".")[0] for d in found} and not emulate_npu:
        hint = (" For a PC without an NPU, emulate_npu (--emulate-npu) runs OpenVINO's NPU "
                "pipeline on the CPU, for learning (its timings are CPU timings)."
                if device == "NPU" else " Install Intel's GPU driver if this PC has an Intel GPU.")
        raise DeviceUnavailable(f"No {device} found: OpenVINO sees {', '.join(found)}.{hint}")


def pipeline_config(device: str, emulate_npu: bool, made: dict, max_prompt_len: int | None,
                    min_response_len: int | None) -> tuple[dict, str]:
    """LLMPipeline properties for `device`, and a note on what runs where."""
    check_device(device, emulate_npu, max_prompt_len, min_response_len)
    config: dict = {}
    note = ""
    if device.startswith(("GPU", "NPU")):
        config["CACHE_DIR"] = str(cache_dir() / "openvino-compiled")
    if device == "NPU":
        options = made.get("options", {})
        if made.get("precision") == "int4" and not options.get("sym", True):
            raise BadInput("The NPU needs a symmetric int4 export, and this one is asymmetric. "
                           "Prepare one with: phi3-aipc prepare --backend openvino --precision "
                           "int4 --preset npu")
        config["MAX_PROMPT_LEN"] = max_prompt_len or NPU_DEFAULTS["max_prompt_len"]
        config["MIN_RESPONSE_LEN"] = min_response_len or NPU_DEFAULTS["min_response_len"]
        if emulate_npu:
            config.update(NPU_EMULATION)
            note = ("NPU pipeline emulated on the CPU (NPUW_DEVICES=CPU): NPU behaviour and "
                    "limits, CPU speed. These timings are not NPU timings.")
    return config, note


class OpenVINOSession(Session):
    def __init__(self, artifact: Path, device: str, precision: str, model: str,
                 emulate_npu: bool, max_prompt_len: int | None,
                 min_response_len: int | None) -> None:
        import openvino_genai as ov_genai
        from transformers import AutoConfig, AutoTokenizer

        made = check_export(artifact)
        config, note = pipeline_config(device, emulate_npu, made, max_prompt_len,
                                       min_response_len)
        start = time.perf_counter()
        try:
            self.pipe = ov_genai.LLMPipeline(str(artifact), device, **config)
        except RuntimeError as err:
            raise DeviceUnavailable(f"OpenVINO could not load {artifact.name} on {device}: "
                                    f"{str(err).strip().splitlines()[-1]}") from None
        load_s = time.perf_counter() - start
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(artifact)  # to count prompt tokens
        self.context = AutoConfig.from_pretrained(artifact).max_position_embeddings
        self.stops = set(stop_token_ids(artifact))
        label = f"{device} (emulated on CPU)" if emulate_npu else device
        super().__init__("openvino", label, precision, model, load_s, note)

    def generate(self, messages: list[dict], max_new_tokens: int = 256, greedy: bool = False,
                 ignore_eos: bool = False, streamer: Streamer | None = None,
                 temperature: float = 0.7, top_p: float = 0.9,
                 seed: int | None = None) -> GenerationResult:
        import openvino_genai as ov_genai

        n_prompt = len(prompt_ids(self.tokenizer, messages))
        check_fits(n_prompt, max_new_tokens, self.context)
        limit = self.config.get("MAX_PROMPT_LEN")
        if limit and n_prompt > limit:
            raise BadInput(f"The prompt is {n_prompt} tokens, over the NPU pipeline's "
                           f"MAX_PROMPT_LEN of {limit}. Load with a larger max_prompt_len "
                           "(--max-prompt-len) or shorten the prompt.")
        config = self.pipe.get_generation_config()
        config.max_new_tokens = max_new_tokens
        config.ignore_eos = ignore_eos
        config.do_sample = not greedy
        if not greedy:
            check_sampling(temperature, top_p)
            config.temperature, config.top_p = temperature, top_p
            config.rng_seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        detok = self.pipe.get_tokenizer()
        stream = TokenStream(detok.decode, self.stops, ignore_eos, streamer)
        try:
            self.pipe.generate(ov_genai.ChatHistory(messages), config,
                               collecting_streamer_class()(stream))
        except RuntimeError as err:
            if "MAX_PROMPT_LEN" in str(err):
                raise BadInput(f"The NPU pipeline refused the prompt: {npu_reason(err)}") from None
            raise
        # Timed by the same clock as every other route (tokens as they reach us), so that routes
        # compare fairly; the pipeline's own result.perf_metrics measure from inside it.
        return self.result(stream, n_prompt)


def npu_reason(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if "NPU" in line or "MAX_PROMPT_LEN" in line]
    return " ".join(line.strip() for line in lines) or str(err)


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
