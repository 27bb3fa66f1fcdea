"""What a precision costs: next-token agreement with the reference on a text nobody tuned for.

    phi3-aipc quality --route openvino --precision int4

Every route reads the same text (`data/quality_text.txt`) in windows of `window` tokens, each
from an empty context, and gives its next-token distribution at every position (teacher
forcing: the text, not the model's own choices, is what comes next). Against the reference
(transformers; fp32, or bf16 where fp32 does not fit this PC, said so) that gives:

- **top-1 agreement**: how often the route's most likely next token is the reference's;
- **mean KL divergence** KL(reference || route), in nats per token. It is taken over the
  reference's TOP_K most likely tokens with the rest as one bucket: a lower bound of the full
  KL, and close to it, since those tokens hold nearly all of the reference's probability;
- **perplexity** of the text, for the route and for the reference (exp of the mean negative
  log-likelihood of the real next token): lower is better, and the gap is what the precision
  costs.

The reference's figures are kept in the cache, so measuring several routes reads it once.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import quality_dir
from .catalog import weight_count
from .errors import BadInput
from .models import resolve_model, with_weights
from .routes import get_route, open_session
from .routes.transformers import quietly
from .standin import DATA

TEXT = DATA / "quality_text.txt"
TOKENS = 2048  # positions read: about 3 minutes for the real Phi-3-mini in bf16 on a laptop CPU
WINDOW = 256
TOP_K = 64
REFERENCE = "transformers"


@dataclass
class Reference:
    """What the reference predicts at each position: its TOP_K tokens and their log-probs
    (most likely first), and the log-prob it gives the text's real next token."""

    top_ids: np.ndarray  # [positions, TOP_K] int
    top_logp: np.ndarray  # [positions, TOP_K] float
    target_logp: np.ndarray  # [positions] float
    precision: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # two writers never share one
        np.savez(tmp, top_ids=self.top_ids, top_logp=self.top_logp,
                 target_logp=self.target_logp, precision=self.precision)
        tmp.replace(path)  # a cut-short run leaves no half-written reference

    @classmethod
    def load(cls, path: Path) -> Reference:
        with np.load(path) as data:
            return cls(data["top_ids"], data["top_logp"], data["target_logp"],
                       str(data["precision"]))


def windows(tokenizer, tokens: int = TOKENS, window: int = WINDOW) -> list[list[int]]:
    """The text's first `tokens` + 1 tokens, cut into windows of `window` tokens (each window
    predicts its own tokens 2..window, so the windows overlap by one token)."""
    check_sizes(tokens, window)
    ids = tokenizer(TEXT.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    if tokens + 1 > len(ids):
        raise BadInput(f"{TEXT.name} has {len(ids) - 1} tokens to predict for this tokenizer; "
                       f"ask for at most that many (--tokens), not {tokens}.")
    ids = ids[:tokens + 1]
    return [ids[start:start + window] for start in range(0, tokens, window - 1)]


def check_sizes(tokens: int, window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise BadInput(f"The window is {window!r} tokens; it must be at least 2 (--window).")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise BadInput(f"The number of tokens is {tokens!r}; it must be at least 1 (--tokens).")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def next_token_logp(session, window: list[int]) -> np.ndarray:
    """The session's log-probs of the next token at each position but the last of `window`."""
    logits = np.asarray(session.logits(window), dtype=np.float32)
    if logits.shape[0] != len(window):
        raise RuntimeError(f"{session.route} gave logits for {logits.shape[0]} positions of "
                           f"{len(window)}")
    return log_softmax(logits[:-1])


def reference_of(session, chunks: list[list[int]], progress=None) -> Reference:
    tops, top_logps, targets = [], [], []
    for window in chunks:
        logp = next_token_logp(session, window)
        top = np.argpartition(-logp, TOP_K, axis=-1)[:, :TOP_K]  # the 64 likeliest, in order:
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(logp, top, axis=-1),
                                                 axis=-1, kind="stable"), axis=-1)
        tops.append(top)
        top_logps.append(np.take_along_axis(logp, top, axis=-1))
        targets.append(logp[np.arange(len(window) - 1), window[1:]])
        if progress:
            progress(len(window) - 1)
    return Reference(np.concatenate(tops), np.concatenate(top_logps), np.concatenate(targets),
                     session.precision)


def compare(session, chunks: list[list[int]], reference: Reference, progress=None) -> dict:
    """Top-1 agreement, mean KL(reference || route) and perplexities of `session` against
    `reference`, over the same windows."""
    agree, kls, nlls, start = [], [], [], 0
    for window in chunks:
        logp = next_token_logp(session, window)
        n = len(window) - 1
        ref_ids = reference.top_ids[start:start + n]
        p_logp = reference.top_logp[start:start + n]
        q_logp = np.take_along_axis(logp, ref_ids, axis=-1)
        agree.append(logp.argmax(axis=-1) == ref_ids[:, 0])
        p, q = np.exp(p_logp), np.exp(q_logp)
        p_rest = np.clip(1 - p.sum(axis=-1), 0, None)
        q_rest = np.clip(1 - q.sum(axis=-1), 1e-30, None)
        rest = np.where(p_rest > 0, p_rest * (np.log(np.maximum(p_rest, 1e-30)) - np.log(q_rest)),
                        0.0)
        kls.append((p * (p_logp - q_logp)).sum(axis=-1) + rest)
        nlls.append(-logp[np.arange(n), window[1:]])
        start += n
        if progress:
            progress(n)
    if start != len(reference.target_logp):
        raise RuntimeError("the route read a different text than the reference")
    return {"positions": start,
            "top1_agreement": float(np.concatenate(agree).mean()),
            "mean_kl": float(np.concatenate(kls).mean()),
            "perplexity": float(np.exp(np.concatenate(nlls).mean())),
            "reference_perplexity": float(np.exp(-reference.target_logp.mean()))}


def reference_path(source, tokens: int, window: int, precision: str) -> Path:
    config = source.path / "config.json"
    weights = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                     for f in source.path.glob("*.safetensors"))
    key = json.dumps([str(source.path), config.read_text(encoding="utf-8"), weights,
                      hashlib.sha256(TEXT.read_bytes()).hexdigest(), tokens, window, TOP_K,
                      precision])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name)[-60:]  # a hub id, or any folder
    return quality_dir() / f"{name}-{digest}.npz"


def reference(source, chunks: list[list[int]], tokens: int, window: int,
              progress: bool = True) -> Reference:
    """The reference's figures for `source` over `chunks`: from the cache, or measured with
    transformers in fp32 (bf16 where fp32 does not fit this PC's free memory, said so). A
    cached fp32 reference is always preferred; a bf16 one only while fp32 does not fit."""
    cached = reference_path(source, tokens, window, "fp32")
    if cached.is_file():
        return Reference.load(cached)
    need, free = fp32_memory(source)
    precision = "fp32" if need <= free else "bf16"
    path = reference_path(source, tokens, window, precision)
    if path.is_file():
        return Reference.load(path)
    with reference_session(source, precision, need, free) as session, \
            bar(tokens, f"reference ({session.precision})", progress) as shown:
        found = reference_of(session, chunks, shown.update)
    found.save(path)
    return found


def fp32_memory(source) -> tuple[float, float]:
    """GB the fp32 reference needs for `source`, and GB free now."""
    import psutil

    config = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
    need = get_route(REFERENCE).memory_gb(weight_count(config), "fp32")
    return need, psutil.virtual_memory().available / 1e9


def reference_session(source, precision: str = "fp32", need: float = 0, free: float = 0):
    """transformers in fp32, or in bf16 when fp32 would not fit (a 16 GB PC with the real
    Phi-3-mini: 15 GB against 7.6 GB)."""
    import sys

    if precision == "fp32":
        return open_session(REFERENCE, model=source, progress=False)
    import torch
    from transformers import AutoModelForCausalLM

    print(f"The fp32 reference needs about {need:.1f} GB and {free:.1f} GB is free: the "
          "reference is bf16 instead (its own rounding is then part of every gap).",
          file=sys.stderr, flush=True)
    route = get_route(REFERENCE)
    net = quietly(AutoModelForCausalLM.from_pretrained, source.path, dtype=torch.bfloat16)
    return route.adopt(route.plan(), net, source.path, source.name)


def bar(total: int, label: str, shown: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="token", disable=not shown, leave=False)


def measure(route: str, precision: str | None = None, device: str | None = None,
            model=None, tokens: int = TOKENS, window: int = WINDOW, progress: bool = True,
            prepare_options: dict | None = None, load_options: dict | None = None) -> dict:
    """What `route` at `precision` costs against the reference on the bundled text: a dict of
    top1_agreement, mean_kl (nats per token), perplexity and reference_perplexity, with what
    was measured."""
    from transformers import AutoTokenizer

    check_sizes(tokens, window)  # bad settings are refused before any work
    get_route(route).plan(precision, device, prepare_options, load_options)
    source = resolve_model(model, progress, weights=False)  # the tokenizer and config
    chunks = windows(AutoTokenizer.from_pretrained(source.path), tokens, window)
    source = with_weights(source, progress)  # the reference reads the checkpoint
    ref = reference(source, chunks, tokens, window, progress)
    with open_session(route, precision, device, source, progress, prepare_options,
                      load_options) as session:
        label = f"{session.route} {session.precision} {session.device}"
        with bar(tokens, label, progress) as shown:
            figures = compare(session, chunks, ref, shown.update)
    return {"model": source.name, "route": session.route, "precision": session.precision,
            "device": session.device, "reference": f"{REFERENCE} {ref.precision}",
            "text": TEXT.name, "window": window, "top_k": TOP_K, "note": session.logits_note,
            **figures}


def summary(result: dict) -> str:
    """One line: e.g. `openvino int4 CPU: top-1 agreement 93.1%, mean KL 0.012 nats/token,
    perplexity 125.0 against the reference's 123.4 (+1.3%)`."""
    change = result["perplexity"] / result["reference_perplexity"] - 1
    return (f"{result['route']} {result['precision']} {result['device']}: top-1 agreement "
            f"{result['top1_agreement']:.1%}, mean KL {result['mean_kl']:.4f} nats/token, "
            f"perplexity {result['perplexity']:.2f} against the reference's "
            f"{result['reference_perplexity']:.2f} ({change:+.1%})"
            + (f" [{result['note']}]" if result.get("note") else ""))
