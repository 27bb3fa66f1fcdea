"""The reference route: Hugging Face transformers in fp32 on the CPU.

Every other route is checked against the greedy token ids this one produces.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..chat import check_fits, check_sampling, prompt_ids, stop_token_ids
from ..errors import DeviceUnavailable
from ..models import ModelSource
from .base import Backend, GenerationResult, Session, Streamer, TokenStream


class TransformersBackend(Backend):
    name = "transformers"
    precisions = ("fp32",)
    devices = ("cpu",)
    default_precision = "fp32"
    default_device = "cpu"
    modules = ("torch", "transformers")
    install_hint = 'python -m pip install -e "."'

    def prepare(self, source: ModelSource, precision: str, device: str | None = None,
                **options) -> Path:
        return source.path  # transformers reads the checkpoint as it is

    def load(self, artifact: Path, device: str, precision: str, model: str,
             **options) -> Session:
        return TransformersSession(artifact, device, precision, model)


def check_memory(artifact: Path) -> None:
    """Refuse a load that cannot fit: fp32 needs 4 bytes per weight (Phi-3-mini: ~15 GB)."""
    import json

    import psutil

    stored = sum(f.stat().st_size for f in artifact.glob("*.safetensors"))
    dtype = json.loads((artifact / "config.json").read_text()).get("torch_dtype", "float32")
    needed = stored * (2 if dtype in ("bfloat16", "float16") else 1)
    free = psutil.virtual_memory().available
    if needed > free:
        raise DeviceUnavailable(
            f"The fp32 reference needs about {needed / 1e9:.1f} GB of memory for this model and "
            f"{free / 1e9:.1f} GB is free. Use a quantized route (--backend openvino) or close "
            "other programs.")


class TransformersSession(Session):
    """Generation with a transformers model: the fp32 reference, or a model another library
    has already loaded and compiled (`net`, as the NPU library does), with the same loop."""

    def __init__(self, artifact: Path, device: str, precision: str, model: str,
                 net=None, backend: str = "transformers", load_s: float = 0.0,
                 device_note: str = "") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        if net is None:
            check_memory(artifact)
            net = AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32)
        self.net = net.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(artifact)
        self.stops = set(stop_token_ids(artifact))
        self.context = self.net.config.max_position_embeddings
        super().__init__(backend, device, precision, model,
                         load_s + time.perf_counter() - start, device_note)

    def generate(self, messages: list[dict], max_new_tokens: int = 256, greedy: bool = False,
                 ignore_eos: bool = False, streamer: Streamer | None = None,
                 temperature: float = 0.7, top_p: float = 0.9,
                 seed: int | None = None) -> GenerationResult:
        import torch
        from transformers import DynamicCache, TemperatureLogitsWarper, TopPLogitsWarper

        prompt = prompt_ids(self.tokenizer, messages)
        check_fits(len(prompt), max_new_tokens, self.context)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if not greedy:
            check_sampling(temperature, top_p)
            warpers = [TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)]
        stream = TokenStream(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
                             self.stops, ignore_eos, streamer)
        with torch.inference_mode():
            cache = DynamicCache()
            step_input = torch.tensor([prompt])
            for _ in range(max_new_tokens):
                logits = self.net(input_ids=step_input, past_key_values=cache,
                                  use_cache=True).logits[:, -1, :]
                if greedy:
                    next_id = int(logits.argmax(-1))
                else:
                    for warp in warpers:
                        logits = warp(step_input, logits)
                    probs = torch.softmax(logits, dim=-1)
                    next_id = int(torch.multinomial(probs, 1, generator=generator))
                if stream.push(next_id):
                    break
                step_input = torch.tensor([[next_id]])
        return self.result(stream, len(prompt))
