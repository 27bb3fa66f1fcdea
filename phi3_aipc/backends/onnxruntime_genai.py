"""The DirectML route: ONNX Runtime GenAI, its model builder, and an explicit token loop.

On a Windows AI PC, `onnxruntime-genai-directml` runs Phi-3 on the integrated GPU through
DirectML (`dml`). Everywhere else `onnxruntime-genai` offers the same API on the CPU provider,
which is how this route is checked on machines without Windows.

prepare() runs `python -m onnxruntime_genai.models.builder` for the provider the model will run
on (`-e dml` or `-e cpu`); load() picks the provider explicitly with `og.Config`; generate() is
the loop of ORT GenAI's own samples: `append_tokens`, then `generate_next_token` until done.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from ..cache import artifact_dir, build_once, check_given, read_manifest, write_manifest
from ..chat import check_fits, check_sampling
from ..envs import IS_WINDOWS
from ..errors import BadInput, DeviceUnavailable, ModelNotFound
from ..hardware import preflight
from ..models import ModelSource
from .base import Backend, GenerationResult, Session, Streamer, TokenStream, run_tool

# Which builds each precision gets: fp16 is a GPU format, fp32 the CPU reference.
TARGETS = {"int4": ("dml", "cpu"), "fp16": ("dml",), "fp32": ("cpu",)}
# int4 block size per provider. CPU: chosen by scripts/sweep_defaults.py (128 decoded ~15%
# faster than the builder's 32 and kept every stand-in reply); DirectML: the builder's own.
DEFAULT_BLOCK_SIZE = {"cpu": 128, "dml": 32}
# Microsoft's prebuilt DirectML int4 Phi-3-mini: the quick path on Windows.
PREBUILT_REPO = "microsoft/Phi-3-mini-4k-instruct-onnx"
PREBUILT_FOLDER = "directml/directml-int4-awq-block-128"
GENAI_PACKAGE = "onnxruntime-genai-directml" if IS_WINDOWS else "onnxruntime-genai"


def dml_available() -> tuple[bool, str]:
    """Whether this onnxruntime-genai can use DirectML, and why not."""
    if not IS_WINDOWS:
        return False, "DirectML exists only on Windows"
    import onnxruntime_genai as og

    if getattr(og, "is_dml_available", lambda: False)():
        return True, ""
    return False, ("this onnxruntime-genai has no DirectML: install onnxruntime-genai-directml "
                   "(and uninstall onnxruntime-genai)")


def build_options(precision: str, target: str, block_size: int | None,
                  accuracy_level: int | None) -> dict:
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
    return options


def builder_command(source: Path, out: Path | str, precision: str, options: dict,
                    cache: Path | None = None) -> list[str]:
    """The model builder command for these settings (`cache`: where it keeps scratch files)."""
    cmd = ["python", "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
           "-p", precision, "-e", options["target"]] + (["-c", str(cache)] if cache else [])
    if precision == "int4":
        cmd += ["--extra_options", f"int4_block_size={options['block_size']}"]
        if options["accuracy_level"]:
            cmd.append(f"int4_accuracy_level={options['accuracy_level']}")
    return cmd


def check_model_folder(folder: Path) -> dict:
    """Refuse a folder that is not an ORT GenAI model; return its genai_config.json."""
    config = folder / "genai_config.json"
    if not config.is_file():
        raise ModelNotFound(
            f"{folder} has no genai_config.json, so it is not an ONNX Runtime GenAI model. Build "
            "one with `phi3-aipc prepare --backend onnxruntime-genai --precision int4` or "
            "`python -m onnxruntime_genai.models.builder -i <model folder> -o <folder> -p int4 "
            "-e cpu`.")
    return json.loads(config.read_text(encoding="utf-8"))


def built_for(genai_config: dict) -> str:
    """The provider a model was built for, from the provider options in its genai_config."""
    options = genai_config["model"]["decoder"].get("session_options", {})
    names = [name for entry in options.get("provider_options", []) for name in entry]
    return "dml" if "dml" in names else "cpu"


def download_prebuilt() -> Path:
    """Microsoft's DirectML int4 Phi-3-mini (about 2 GB), with a progress bar."""
    from huggingface_hub import snapshot_download

    from ..models import hub_unreachable

    reason = hub_unreachable()
    if reason:
        raise ModelNotFound(f"Cannot reach the model hub to download {PREBUILT_REPO} ({reason}). "
                            "Go online, or build the model yourself (without --prebuilt).")
    folder = snapshot_download(PREBUILT_REPO, allow_patterns=[f"{PREBUILT_FOLDER}/*"])
    return Path(folder) / PREBUILT_FOLDER


def smoke_test(folder: Path) -> None:
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


class OnnxRuntimeGenAIBackend(Backend):
    name = "onnxruntime-genai"
    precisions = ("int4", "fp16", "fp32")
    devices = ("dml", "cpu")
    default_precision = "int4"
    default_device = "cpu"
    modules = ("onnxruntime_genai", "onnx_ir")
    install_hint = 'python -m pip install -e ".[onnx]"'
    prepare_options = ("target", "block_size", "accuracy_level", "prebuilt", "skip_preflight")
    load_options = ()

    def __init__(self) -> None:
        self.fallback_note = ""

    def check(self, precision: str | None, device: str | None) -> tuple[str, str]:
        if device is None:  # DirectML where it is there, otherwise the CPU, saying why
            has_dml, why = dml_available() if self.is_installed() else (False, "")
            if not has_dml and why:
                self.fallback_note = f"Using the CPU provider: {why}."
            device = "dml" if has_dml else "cpu"
        precision, device = super().check(precision, device)
        if device == "dml":
            has_dml, why = dml_available()
            if not has_dml:
                raise DeviceUnavailable(
                    f"DirectML is not available: {why}. DirectML needs Windows and the "
                    f"onnxruntime-genai-directml package; here {GENAI_PACKAGE} runs on the CPU "
                    "(--device cpu).")
        return precision, device

    def devices_here(self) -> list[str]:
        """DirectML first where it is installed and works; the CPU provider always."""
        return ["dml", "cpu"] if dml_available()[0] else ["cpu"]

    def own_source(self, prebuilt: bool = False, **options) -> ModelSource | None:
        """With prebuilt: Microsoft's DirectML int4 build, downloaded instead of built here."""
        if not prebuilt:
            return None
        if set(options) - {"target"} or options.get("target", "dml") != "dml":
            raise BadInput("The prebuilt model comes as it is (int4, DirectML): build your own "
                           "for other settings.")
        return ModelSource(f"{PREBUILT_REPO}/{PREBUILT_FOLDER}", download_prebuilt(), "hub")

    def prepare(self, source: ModelSource, precision: str, device: str | None = None,
                target: str | None = None, block_size: int | None = None,
                accuracy_level: int | None = None, prebuilt: bool = False,
                skip_preflight: bool = False) -> Path:
        if (source.path / "genai_config.json").is_file():  # already built: use it
            if prebuilt and precision != "int4":
                raise BadInput(f"The prebuilt model is int4, not {precision}.")
            check_given(source.path)
            return source.path
        # fp16 is a DirectML build, fp32 a CPU build; int4 is built for the device it runs on.
        target = target or {"fp16": "dml", "fp32": "cpu"}.get(precision, device or "cpu")
        options = build_options(precision, target, block_size, accuracy_level)
        final = artifact_dir(self.name, source.name, source.fingerprint(), precision, options)

        def build(tmp: Path) -> None:
            if not skip_preflight:
                preflight(source.path, precision, f"Building {source.name} for ONNX Runtime "
                          f"GenAI {precision}")
            with tempfile.TemporaryDirectory() as scratch:  # the builder's temporary files
                cmd = builder_command(source.path, tmp, precision, options, Path(scratch))
                print(f"Building {source.name} for ONNX Runtime GenAI ({precision}, "
                      f"{options['target']}):\n  {' '.join(cmd)}", file=sys.stderr, flush=True)
                run_tool(cmd, "The ONNX Runtime GenAI model builder", tmp)
            check_model_folder(tmp)
            smoke_test(tmp)
            shown = builder_command(source.path, "<output>", precision, options)
            write_manifest(tmp, route=self.name, source=source, precision=precision,
                           options=options, command=shown,
                           packages=("onnxruntime-genai", "onnxruntime-genai-directml"))

        return build_once(final, build)

    def load(self, artifact: Path, device: str, precision: str, model: str,
             **options) -> Session:
        return OnnxRuntimeGenAISession(artifact, device, precision, model, self.fallback_note)


class OnnxRuntimeGenAISession(Session):
    def __init__(self, artifact: Path, device: str, precision: str, model: str,
                 note: str) -> None:
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        genai_config = check_model_folder(artifact)
        made = read_manifest(artifact)
        if made and made["precision"] != precision:
            raise BadInput(f"{artifact} is a {made['precision']} build, not {precision}.")
        target = built_for(genai_config)
        if target == "cpu" and device == "dml":
            raise BadInput("This model was built for the CPU (-e cpu); DirectML needs a model "
                           "built for it: phi3-aipc prepare --backend onnxruntime-genai "
                           f"--precision {precision} --device dml")
        if target == "dml" and device == "cpu":
            note = " ".join(filter(None, [note, "This model was built for DirectML (-e dml); "
                                          "it runs here on the CPU provider instead."]))
        start = time.perf_counter()
        config = og.Config(str(artifact))
        config.clear_providers()  # the CPU provider is always there
        if device == "dml":
            config.append_provider("dml")
        self.og_model = og.Model(config)
        self.og_tokenizer = og.Tokenizer(self.og_model)
        load_s = time.perf_counter() - start
        # ORT GenAI's decoder keeps a leading space that Hugging Face strips, so text comes
        # from the Hugging Face tokenizer saved beside the model (ids are the same).
        self.hf_tokenizer = AutoTokenizer.from_pretrained(artifact)
        self.context = genai_config["model"]["context_length"]
        eos = genai_config["model"]["eos_token_id"]
        self.stops = {eos} if isinstance(eos, int) else set(eos)
        super().__init__("onnxruntime-genai", device, precision, model, load_s, note)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The chat template and tokenizer of ORT GenAI itself."""
        text = self.og_tokenizer.apply_chat_template(json.dumps(messages),
                                                     add_generation_prompt=True)
        return [int(i) for i in self.og_tokenizer.encode(text)]

    def generate(self, messages: list[dict], max_new_tokens: int = 256, greedy: bool = False,
                 ignore_eos: bool = False, streamer: Streamer | None = None,
                 temperature: float = 0.7, top_p: float = 0.9,
                 seed: int | None = None) -> GenerationResult:
        import onnxruntime_genai as og

        prompt = self.prompt_ids(messages)
        check_fits(len(prompt), max_new_tokens, self.context)
        params = og.GeneratorParams(self.og_model)
        search = dict(max_length=len(prompt) + max_new_tokens, do_sample=not greedy)
        if not greedy:
            check_sampling(temperature, top_p)
            search.update(temperature=temperature, top_p=top_p, top_k=0)
            if seed is not None:
                search["random_seed"] = seed
        params.set_search_options(**search)
        decode = lambda ids: self.hf_tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        stream = TokenStream(decode, self.stops, ignore_eos, streamer)
        generator = og.Generator(self.og_model, params)
        generator.append_tokens(prompt)
        token = None
        for _ in range(max_new_tokens):
            if generator.is_done():
                if not (ignore_eos and token in self.stops):
                    break
                # It stopped at a stop token that is to be ignored: feed it back, go on.
                generator.append_tokens([token])
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if stream.push(token):
                break
        return self.result(stream, len(prompt))
