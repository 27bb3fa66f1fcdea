"""The DirectML route: ONNX Runtime GenAI, its model builder, and an explicit token loop.

On a Windows AI PC, `onnxruntime-genai-directml` runs Phi-3 on the integrated GPU through
DirectML (`dml`). Everywhere else `onnxruntime-genai` offers the same API on the CPU provider,
which is how this route is checked on machines without Windows.

prepare() runs `python -m onnxruntime_genai.models.builder` for the provider the model will run
on (`-e dml` or `-e cpu`); load() picks the provider explicitly with `og.Config`; generate() is
the loop of ORT GenAI's own samples: `append_tokens`, then `generate_next_token` until done, on
a new generator for every reply. `continuous_decoding` says where a live generator takes more
tokens (not on DirectML).
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from ..cache import read_manifest
from ..catalog import FAMILY
from ..envs import IS_WINDOWS
from ..errors import BadInput, DeviceUnavailable, ModelNotFound
from ..structured import for_llguidance, refused_schema
from .base import Route, Verdict, WeightsRead
from .plan import PREBUILT, SKIP_PREFLIGHT, Option, Plan
from .session import GenerationRequest, GenerationResult, Session, Streamer, TokenStream


def release(version: str) -> tuple[int, int]:
    """(major, minor) of an onnxruntime-genai version string ("0.13.1", "0.16.0-dev")."""
    major, minor = (re.findall(r"\d+", version) + ["0", "0"])[:2]
    return int(major), int(minor)


# Where a generator that already holds tokens takes more (`append_tokens` after generating:
# "continuous decoding"), by the release that first allowed it. Elsewhere the library raises
# RuntimeError "Continuous decoding is not supported on the selected device type (DirectML).
# Please recreate the generator instance to avoid using continuous decoding." Source:
# Generator::AppendTokens in src/generators.cpp of microsoft/onnxruntime-genai, which checks
# the device of the KV cache against a fixed list: CPU, CUDA and WebGPU from v0.6.0, OpenVINO
# from v0.9.0, NvTensorRtRtx from v0.10.0, RyzenAI from v0.12.0; v0.13.1 (DirectML's package
# here) has those six, and so has main (commit a0c04eb, Aug 2026, SupportsContinuousDecoding),
# whose "Continuous decoding is not supported" text is also in the 0.18.0 wheel. DirectML is in
# none of them. Names: the provider given to append_provider, or Model.device_type's.
CONTINUOUS_DECODING = {
    "cpu": (0, 6), "cuda": (0, 6), "webgpu": (0, 6), "openvino": (0, 9),
    "nvtensorrtrtx": (0, 10), "ryzenai": (0, 12),
}


def cpu_threads(linux: bool = sys.platform.startswith("linux"), cores: int | None = None,
                logical: int | None = None, hybrid: bool | None = None,
                usable: int | None = None) -> int | None:
    """The decoder's intra-op threads on the CPU provider, or None to leave ONNX Runtime's own
    count. On Linux ORT's wheels take half the logical CPUs, which assumes two hardware threads
    per core (microsoft/onnxruntime#13974): on a CPU without them that is half the cores (1 of 2
    on CI's VM, where decoding then ran about 1.5 times slower than on both). There the route
    asks for every core this process may use. Elsewhere ORT's count stays: Windows counts the
    physical cores itself (without the low-power cores of Intel's hybrid CPUs:
    onnxruntime/core/platform/windows/hardware_core_enumerator.cc), and macOS and hybrid CPUs on
    Linux (which list /sys/devices/cpu_atom) are not measured here."""
    import os

    import psutil

    if not linux:
        return None
    cores = cores or psutil.cpu_count(logical=False) or 1
    logical = logical or os.cpu_count() or 1
    if hybrid is None:
        hybrid = Path("/sys/devices/cpu_atom").exists()
    if hybrid or logical > cores:
        return None
    return min(cores, usable or len(os.sched_getaffinity(0)))


def cpu_session_options() -> dict:
    """The session options the route adds to genai_config.json's decoder on the CPU provider."""
    threads = cpu_threads()
    return {"intra_op_num_threads": threads} if threads else {}


def cpu_overlay() -> str | None:
    """`cpu_session_options()` as the JSON `og.Config.overlay` takes, or None where there are
    none."""
    options = cpu_session_options()
    return json.dumps({"model": {"decoder": {"session_options": options}}}) if options else None


def continuous_decoding(device: str, version: str | None = None) -> bool:
    """Whether a generator on `device` ("cpu", "dml", or Model.device_type's "CPU", "DirectML")
    takes the next turn's tokens after it generated, in onnxruntime-genai `version` (default:
    the installed one). Where it does, a chat appends each turn to one live generator; where it
    does not (DirectML), each turn needs a new generator fed the whole conversation, and
    ignoring the end of sequence cannot feed the stop token back (see `_generate`)."""
    if version is None:
        import onnxruntime_genai as og

        version = og.__version__
    since = CONTINUOUS_DECODING.get(device.lower())
    return since is not None and release(version) >= since


class OnnxRuntimeGenAISession(Session):
    def __init__(self, plan: Plan, artifact: Path, model: str, og_model=None) -> None:
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        genai_config = check_model_folder(artifact)
        made = read_manifest(artifact)
        if made and made["precision"] != plan.precision:
            raise BadInput(f"{artifact} is a {made['precision']} build, not {plan.precision}.")
        target = built_for(genai_config)
        # Its output layer sees the prompt's last position only (the route's CPU builds)
        self.pruned = bool(made and made.get("options", {}).get("prune_lm_head"))
        if target == "cpu" and plan.device == "dml":
            raise BadInput("This model was built for the CPU (-e cpu); DirectML needs a model "
                           "built for it: phi3-aipc prepare --route onnxruntime-genai "
                           f"--precision {plan.precision} --device dml")
        note = ("This model was built for DirectML (-e dml); it runs here on the CPU provider "
                "instead." if target == "dml" and plan.device == "cpu" else "")
        start = time.perf_counter()
        if og_model is None:
            config = og.Config(str(artifact))
            config.clear_providers()  # the CPU provider is always there
            if plan.device == "dml":
                config.append_provider("dml")
            elif overlay := cpu_overlay():
                config.overlay(overlay)
            og_model = og.Model(config)
        self.og_model = og_model
        self.og_tokenizer = og.Tokenizer(self.og_model)
        load_s = time.perf_counter() - start
        # ORT GenAI's decoder keeps a leading space that Hugging Face strips, so text comes
        # from the Hugging Face tokenizer saved beside the model (ids are the same).
        self.hf_tokenizer = AutoTokenizer.from_pretrained(artifact)
        self.context_window = genai_config["model"]["context_length"]
        self.vocab_size = genai_config["model"]["vocab_size"]
        eos = genai_config["model"]["eos_token_id"]
        self.stops = {eos} if isinstance(eos, int) else set(eos)
        super().__init__(plan, model, load_s, note=note)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The chat template and tokenizer of ORT GenAI itself."""
        text = self.og_tokenizer.apply_chat_template(json.dumps(messages),
                                                     add_generation_prompt=True)
        return [int(i) for i in self.og_tokenizer.encode(text)]

    def _generate(self, messages: list[dict], prompt: list[int], request: GenerationRequest,
                  streamer: Streamer | None) -> GenerationResult:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.og_model)
        search = dict(max_length=len(prompt) + request.max_new_tokens,
                      do_sample=not request.greedy)
        # Ignoring the end of sequence: where the generator takes more tokens, a stop token it
        # picked is fed back and it goes on (every route's ids, stop tokens included). Where it
        # does not (DirectML), it must never stop: the search option min_length (0.13.1 and
        # 0.18 alike; Search_Cpu::ApplyMinLength, which DirectML's search is too, masks the
        # stop tokens until the sequence is that long) makes it take the likeliest other token.
        feed_back = request.ignore_eos and continuous_decoding(self.plan.device)
        if request.ignore_eos and not feed_back:
            search["min_length"] = search["max_length"]
        if not request.greedy:
            # top_k = the vocabulary, not 0: with top_k 0 the library takes its top-p-only path
            # (Generator::InitializeSamplingMethod, src/generators.cpp), which in 0.18.0 drew
            # tokens outside the nucleus (top_p 0.5: 13 of 51 tokens, tests/test_sampling.py);
            # top_k > 1 with top_p < 1 takes its top-k-then-top-p path, which keeps to it.
            search.update(temperature=request.temperature, top_p=request.top_p,
                          top_k=self.vocab_size)
            if request.seed is not None:
                search["random_seed"] = request.seed
        params.set_search_options(**search)
        if request.json_schema is not None:
            params.set_guidance("json_schema", for_llguidance(request.json_schema))
        decode = lambda ids: self.hf_tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        stream = TokenStream(decode, self.stops, request.ignore_eos, streamer)
        try:
            generator = og.Generator(self.og_model, params)  # compiles the schema's grammar
        except RuntimeError as err:
            raise refused_schema(err) or err from None
        generator.append_tokens(prompt)
        token = None
        for _ in range(request.max_new_tokens):
            if generator.is_done():
                if not (feed_back and token in self.stops):
                    break
                # It stopped at a stop token that is to be ignored: feed it back, go on.
                generator.append_tokens([token])
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if stream.push(token):
                break
        return self.result(stream, len(prompt))

    def logits(self, ids: list[int]):
        """The model's own logits output after the whole window goes in at once. A build whose
        output layer sees the last position only (prune_lm_head: the route's CPU builds, as its
        manifest says, or one whose whole-window output has one row) takes the window a token at
        a time instead, each token's logits as it goes in: a decode step per position, slower
        than one prompt (the CPU provider's generators allow it; DirectML's do not)."""
        import numpy as np
        import onnxruntime_genai as og

        def generator():
            params = og.GeneratorParams(self.og_model)
            params.set_search_options(max_length=len(ids) + 1)
            return og.Generator(self.og_model, params)

        if not self.pruned:
            whole = generator()
            whole.append_tokens(ids)
            logits = np.asarray(whole.get_output("logits"))[0]
            if len(logits) == len(ids):
                return logits
        stepwise, rows = generator(), []
        for token in ids:
            stepwise.append_tokens([token])
            rows.append(np.asarray(stepwise.get_output("logits"))[0, -1])
        return np.stack(rows)

    def close(self) -> None:
        self.og_model = self.og_tokenizer = None


GENAI_PACKAGE = "onnxruntime-genai-directml" if IS_WINDOWS else "onnxruntime-genai"


def directml_status() -> tuple[bool, str]:
    """Whether this onnxruntime-genai can use DirectML, and if not, why."""
    if not IS_WINDOWS:
        return False, "DirectML exists only on Windows"
    try:
        import onnxruntime_genai as og

        if og.is_dml_available():
            return True, ""
    except Exception as err:  # a broken install: say what it said
        return False, f"onnxruntime_genai did not load ({type(err).__name__}: {err})"
    return False, ("this onnxruntime-genai has no DirectML: install onnxruntime-genai-directml "
                   "(and uninstall onnxruntime-genai)")


def built_for(genai_config: dict) -> str:
    """The provider a model was built for, from the provider options in its genai_config."""
    options = genai_config["model"]["decoder"].get("session_options", {})
    names = [name for entry in options.get("provider_options", []) for name in entry]
    return "dml" if "dml" in names else "cpu"


# Which builds each precision gets: fp16 is a GPU format, fp32 the CPU reference.
TARGETS = {"int4": ("dml", "cpu"), "fp16": ("dml",), "fp32": ("cpu",)}
# int4 block size per provider. CPU: chosen by scripts/sweep_defaults.py (128 decoded ~15%
# faster than the builder's 32 and kept every stand-in reply); DirectML: the builder's own.
DEFAULT_BLOCK_SIZE = {"cpu": 128, "dml": 32}


def build_options(precision: str, target: str, block_size: int | None,
                  accuracy_level: int | None, prune_lm_head: bool | None = None) -> dict:
    """The builder's settings, spelled out (they are part of the artifact's cache key)."""
    if precision not in TARGETS:
        raise BadInput(f"The onnxruntime-genai route builds {', '.join(TARGETS)}; got {precision}.")
    if target not in TARGETS[precision]:
        raise BadInput(f"{precision} is built for {' or '.join(TARGETS[precision])}, not "
                       f"{target}: fp16 targets DirectML, fp32 the CPU, int4 either.")
    options = {"target": target}
    if precision == "int4":
        block = block_size or DEFAULT_BLOCK_SIZE[target]
        if block not in (16, 32, 64, 128, 256):
            raise BadInput(f"block_size must be 16, 32, 64, 128 or 256; got {block}.")
        options["block_size"] = block
        if accuracy_level is None:  # the builder's own defaults: int8 activations on the CPU
            accuracy_level = 4 if target == "cpu" else 0
        if accuracy_level not in (0, 1, 2, 3, 4):
            raise BadInput(f"accuracy_level must be 0-4; got {accuracy_level}.")
        options["accuracy_level"] = accuracy_level
    elif block_size or accuracy_level is not None:
        raise BadInput("block_size and accuracy_level apply to int4 builds only.")
    # The output layer on the prompt's last position only: the others' logits are never used
    # in generation, and on the bench stand-in the whole prompt's output layer took 37 of the
    # first token's 213 ms (scripts/profile_decode.py; 170 ms pruned). CPU builds only: a
    # pruned build gives one position's logits, and `logits()` then feeds the window a token at
    # a time, which DirectML's generators refuse (no continuous decoding).
    if prune_lm_head and target != "cpu":
        raise BadInput("prune_lm_head applies to CPU builds: DirectML's generators cannot take "
                       "a window a token at a time, which `phi3-aipc quality` then needs.")
    if target == "cpu" and prune_lm_head is not False:
        options["prune_lm_head"] = True
    return options


def builder_option_names() -> tuple[str, str]:
    """The installed builder's names for the int4 block size and accuracy level. 0.18 calls them
    block_size and accuracy_level and silently ignores the int4_ names (its models came out with
    blocks of 32 whatever int4_block_size said); DirectML's 0.13 knows only the int4_ names."""
    import onnxruntime_genai as og

    if release(og.__version__) < (0, 18):
        return "int4_block_size", "int4_accuracy_level"
    return "block_size", "accuracy_level"


def builder_command(source: Path, out: Path | str, precision: str, options: dict,
                    cache: Path | None = None) -> list[str]:
    """The model builder command for these settings (`cache`: where it keeps scratch files)."""
    cmd = ["python", "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
           "-p", precision, "-e", options["target"]] + (["-c", str(cache)] if cache else [])
    extra = []
    if precision == "int4":
        block, level = builder_option_names()
        extra.append(f"{block}={options['block_size']}")
        if options["accuracy_level"]:
            extra.append(f"{level}={options['accuracy_level']}")
    if options.get("prune_lm_head"):  # both pinned builders (0.13.1, 0.18.0) know it
        extra.append("prune_lm_head=true")
    return cmd + (["--extra_options", *extra] if extra else [])


def check_model_folder(folder: Path) -> dict:
    """Refuse a folder that is not an ORT GenAI model; return its genai_config.json."""
    config = folder / "genai_config.json"
    if not config.is_file():
        raise ModelNotFound(
            f"{folder} has no genai_config.json, so it is not an ONNX Runtime GenAI model. Build "
            "one with `phi3-aipc prepare --route onnxruntime-genai --precision int4` or "
            "`python -m onnxruntime_genai.models.builder -i <model folder> -o <folder> -p int4 "
            "-e cpu`.")
    return json.loads(config.read_text(encoding="utf-8"))


def decoder_file(folder: Path) -> Path:
    """The decoder's ONNX file, as genai_config.json names it: model.onnx from the builder, a
    longer name in Microsoft's prebuilt builds (e.g. phi3-mini-4k-instruct-cpu-int4-rtn-block-
    32-acc-level-4.onnx, its weights in the same name plus .data)."""
    decoder = check_model_folder(folder).get("model", {}).get("decoder", {})
    return folder / decoder.get("filename", "model.onnx")


def onnx_weights(folder: Path) -> tuple[int, int, int]:
    """Bytes of all initializers of the ONNX model, of the embedding lookup's, and of the
    output layer's (the builder names them lm_head.*). Read from the graph alone: the weights
    file beside it (<decoder>.data) is not opened."""
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(decoder_file(folder)), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
             for t in model.graph.initializer}
    embedding = max((sum(sizes.get(i, 0) for i in node.input) for node in model.graph.node
                     if node.op_type in ("Gather", "GatherBlockQuantized")), default=0)
    head = sum(size for name, size in sizes.items() if name.startswith("lm_head"))
    return sum(sizes.values()), embedding, head


class OnnxRuntimeGenAIRoute(Route):
    name = "onnxruntime-genai"
    precisions = ("int4", "fp16", "fp32")
    devices = ("dml", "cpu")
    default_precision = "int4"
    default_device = "cpu"
    modules = ("onnxruntime_genai", "onnx_ir")
    # One variant per environment; -winml is Windows ML's (DirectML's successor, opt-in).
    packages = ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-winml",
                "onnxruntime")
    install_hint = 'python -m pip install -e ".[onnx]"'
    doctor_key = "directml"
    artifact_marker, artifact_kind = "genai_config.json", "an ONNX Runtime GenAI build"
    export_tool = "The ONNX Runtime GenAI model builder"
    # set_guidance (LLGuidance) masks the logits on the CPU side of the search: the CPU wheel
    # and DirectML's 0.13.1 wheel are both built with it (checked in their binaries; DirectML
    # not run here).
    constrained_devices = devices
    options = (
        Option("target", "prepare", "the provider to build for (default: int4 for the device, "
               "fp16 dml, fp32 cpu)", choices=("cpu", "dml")),
        Option("block_size", "prepare", "int4 block size (default "
               + ", ".join(f"{v} for {'the CPU' if k == 'cpu' else 'DirectML'}"
                           for k, v in DEFAULT_BLOCK_SIZE.items()) + ")", int),
        Option("accuracy_level", "prepare", "int4 MatMul activations: 4 int8 (the CPU "
               "default), 1 fp32, 0 the provider's choice", int),
        Option("prune_lm_head", "prepare", "CPU builds: the output layer on the prompt's last "
               "position only, for a faster first token (the default)", bool,
               off="--all-logits", off_help="CPU builds: the output layer on every position of "
               "the prompt (the builder's own default)"),
        PREBUILT,
        SKIP_PREFLIGHT,
    )

    def choose_device(self, device: str | None) -> tuple[str, list[str]]:
        """DirectML where it is there, otherwise the CPU, saying why; DirectML asked for where
        it is missing is refused."""
        if device is None:
            has_dml, why = directml_status() if self.is_installed() else (False, "")
            notes = [f"Using the CPU provider: {why}."] if not has_dml and why else []
            return ("dml" if has_dml else "cpu"), notes
        device, notes = super().choose_device(device)
        if device == "dml":
            has_dml, why = directml_status()
            if not has_dml:
                raise DeviceUnavailable(
                    f"DirectML is not available: {why}. DirectML needs Windows and the "
                    f"onnxruntime-genai-directml package; here {GENAI_PACKAGE} runs on the CPU "
                    "(--device cpu).")
        return device, notes

    def refine(self, plan: Plan) -> Plan:
        if plan.prebuilt:
            return plan
        options = dict(plan.prepare_options)
        # fp16 is a DirectML build, fp32 a CPU build; int4 is built for the device it runs on.
        target = options.pop("target", None) or {"fp16": "dml", "fp32": "cpu"}.get(
            plan.precision, plan.device)
        built = build_options(plan.precision, target, options.get("block_size"),
                              options.get("accuracy_level"), options.get("prune_lm_head"))
        return plan.but(prepare_options=built)

    def devices_here(self) -> list[str]:
        """DirectML first where it is installed and works; the CPU provider always."""
        return ["dml", "cpu"] if directml_status()[0] else ["cpu"]

    def facts(self) -> dict:
        available, why = directml_status()
        return {"available": available, "reason": f"{why}." if why else ""}

    def facts_lines(self, facts: dict) -> list[str]:
        return [f"DirectML: {'available' if facts['available'] else 'no'} {facts['reason']}"]

    def verdict(self, facts: dict, versions: dict) -> Verdict:
        if not any(versions.get(p) for p in self.packages[:3]):
            return Verdict("missing", "onnxruntime-genai is not installed.", self.install_hint)
        if facts.get("available"):
            return Verdict("ready", "DirectML is available.")
        if IS_WINDOWS and not versions.get("onnxruntime-genai-directml"):
            return Verdict("cpu-only", "The CPU build of onnxruntime-genai is installed, not the "
                           "DirectML one.", "python -m pip uninstall -y onnxruntime-genai && "
                           'python -m pip install -e ".[onnx]"')
        return Verdict("cpu-only", f"{facts.get('reason', '')} The same API runs on the CPU "
                       "provider.".strip())

    def bench_configs(self, max_prompt_len: int) -> list[dict]:
        """fp16 is a DirectML build: measured only with DirectML."""
        return [c for c in super().bench_configs(max_prompt_len)
                if (c["precision"] == "fp16") == (c["device"] == "dml")]

    def weights_read(self, artifact: Path, precision: str) -> WeightsRead:
        total, embedding, head = onnx_weights(artifact)
        return WeightsRead((total - embedding) / 1e6, head / 1e6, "ONNX initializers")

    def export_command(self, source: Path, out: Path | str, plan: Plan,
                       scratch: Path | None = None) -> list[str]:
        return builder_command(source, out, plan.precision, dict(plan.prepare_options), scratch)

    def check_artifact(self, folder: Path, precision: str | None = None) -> None:
        model_type = check_model_folder(folder).get("model", {}).get("type")
        if model_type not in FAMILY:  # the session checks the precision against the manifest
            raise ModelNotFound(f"{folder} holds an ONNX Runtime GenAI {model_type!r} model, "
                                "not Phi-3. These notebooks are written for Phi-3-mini.")

    def smoke_test(self, folder: Path) -> None:
        """A build counts as finished only once it loads (on the CPU provider) and generates."""
        import onnxruntime_genai as og

        config = og.Config(str(folder))
        config.clear_providers()
        model = og.Model(config)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=8)
        generator = og.Generator(model, params)
        generator.append_tokens([1])
        generator.generate_next_token()

    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        return OnnxRuntimeGenAISession(plan, artifact, model)

    def adopt(self, plan: Plan, loaded, artifact: Path, model: str) -> Session:
        """A session around an `og.Model` loaded from `artifact` (with the provider the plan
        names)."""
        return OnnxRuntimeGenAISession(plan, artifact, model, og_model=loaded)
