"""The reference route: Hugging Face transformers in fp32 on the CPU.

Every other route is checked against the greedy token ids this one produces.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..chat import prompt_ids, stop_token_ids
from ..errors import DeviceUnavailable
from ..models import ModelSource
from .base import Route, WeightsRead
from .plan import Plan
from .session import GenerationRequest, GenerationResult, Session, Streamer, TokenStream


class TransformersRoute(Route):
    name = "transformers"
    precisions = ("fp32",)
    devices = ("cpu",)
    default_precision = "fp32"
    default_device = "cpu"
    modules = ("torch", "transformers")
    packages = ("torch", "transformers", "huggingface_hub")
    install_hint = 'python -m pip install -e "."'

    def memory_gb(self, weights: int, precision: str) -> float:
        return super().memory_gb(weights, "fp32")  # loaded as fp32, whatever is stored

    def weights_read(self, artifact: Path, precision: str) -> WeightsRead:
        read = super().weights_read(artifact, "fp32")  # loaded as fp32, whatever is stored
        return WeightsRead(read.total_mb, read.output_layer_mb, "parameter count x 4 bytes (fp32)")

    def prepare(self, plan: Plan, source: ModelSource) -> Path:
        return source.path  # transformers reads the checkpoint as it is

    def load(self, plan: Plan, artifact: Path, model: str) -> Session:
        return TransformersSession(plan, artifact, model)

    def adopt(self, plan: Plan, loaded, artifact: Path, model: str) -> Session:
        """A session around a transformers model loaded from `artifact`, in the dtype it has
        (a notebook's bf16 model stays bf16: no fp32 copy)."""
        dtype = str(getattr(loaded, "dtype", "")).replace("torch.", "")
        note = f"Generating with the model loaded above ({dtype})." if dtype else ""
        label = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype)
        return TransformersSession(plan.but(precision=label or plan.precision), artifact, model,
                                   net=loaded, note=note)


def check_memory(artifact: Path) -> None:
    """Refuse a load that cannot fit: fp32 needs 4 bytes per weight (Phi-3-mini: ~15 GB)."""
    import json

    import psutil

    stored = sum(f.stat().st_size for f in artifact.glob("*.safetensors"))
    config = json.loads((artifact / "config.json").read_text(encoding="utf-8"))
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"  # transformers 5: dtype
    needed = stored * (2 if dtype in ("bfloat16", "float16") else 1)
    free = psutil.virtual_memory().available
    if needed > free:
        raise DeviceUnavailable(
            f"The fp32 reference needs about {needed / 1e9:.1f} GB of memory for this model and "
            f"{free / 1e9:.1f} GB is free. Use a quantized route (--route openvino) or close "
            "other programs.")


def quietly(load, *args, **kwargs):
    """`load(*args, **kwargs)` without transformers' progress bars: transformers 5 draws one
    ("Loading weights") on stderr, where the CLI's errors are one line."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        if shown:
            logging.enable_progress_bar()


class TransformersSession(Session):
    """Generation with a transformers model: the fp32 reference, or a model another library
    has already loaded and compiled (`net`, as the NPU library does), with the same loop."""

    def __init__(self, plan: Plan, artifact: Path, model: str, net=None, load_s: float = 0.0,
                 device: str | None = None, note: str = "") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        if net is None:
            check_memory(artifact)
            net = quietly(AutoModelForCausalLM.from_pretrained, artifact, dtype=torch.float32)
        self.net = net.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(artifact)
        self.stops = set(stop_token_ids(artifact))
        self.context_window = self.net.config.max_position_embeddings
        super().__init__(plan, model, load_s + time.perf_counter() - start, device, note)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return prompt_ids(self.tokenizer, messages)

    def _generate(self, messages: list[dict], prompt: list[int], request: GenerationRequest,
                  streamer: Streamer | None) -> GenerationResult:
        import torch
        from transformers import DynamicCache, TemperatureLogitsWarper, TopPLogitsWarper

        seed = request.seed
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        warpers = [] if request.greedy else [TemperatureLogitsWarper(request.temperature),
                                             TopPLogitsWarper(request.top_p)]
        stream = TokenStream(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
                             self.stops, request.ignore_eos, streamer)
        with torch.inference_mode():
            cache = DynamicCache()
            step_input = torch.tensor([prompt])
            for _ in range(request.max_new_tokens):
                logits = self.net(input_ids=step_input, past_key_values=cache,
                                  use_cache=True).logits[:, -1, :]
                if request.greedy:
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

    def logits(self, ids: list[int]):
        import torch

        with torch.inference_mode():
            return self.net(input_ids=torch.tensor([ids])).logits[0].float().numpy()

    def close(self) -> None:
        self.net = None
