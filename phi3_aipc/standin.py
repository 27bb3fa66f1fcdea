"""The offline stand-in: a tiny Phi-3 that memorizes a few fixed chats.

On a machine without a model hub (CI, a workshop without Wi-Fi) every route still runs its real
code paths (export, quantization, generation) on this model. It is a genuine `Phi3ForCausalLM`
with Phi-3-mini's tokenizer, chat template and stop tokens, but only 2 layers of width 128,
trained for a few seconds so that its greedy reply to each chat in `data/standin_chats.json` is a
fixed sentence that ends with `<|end|>`. Same recipe, same seed: same weights, same tokens.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from . import phi4_tokenizer
from .cache import MANIFEST, build_once, cache_dir
from .catalog import MODELS, Model, default
from .chat import template_ids
from .errors import ModelNotFound

DEFAULT = default()  # the catalog's default model: the bench stand-in has its shapes

DATA = Path(__file__).resolve().parents[1] / "data"
TOKENIZER_DIR = DATA / "tokenizer"
CHATS_FILE = DATA / "standin_chats.json"

# Small enough to build in seconds, still valid for every route's quantization: hidden 128 is a
# multiple of the int4 group size 128, and the NPU library's int4 was seen working at this width.
MODEL_CONFIG = dict(
    vocab_size=32064,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=4096,
    original_max_position_embeddings=4096,
    sliding_window=2047,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=32000,
    pad_token_id=32000,
    tie_word_embeddings=False,
)
# Phi-3-mini-4k-instruct's stop tokens: <|endoftext|>, <|assistant|>, <|end|>.
EOS_TOKEN_IDS = [32000, 32001, 32007]
END_TOKEN_ID = 32007
TRAINING = dict(seed=0, steps=100, lr=3e-3, threads=2)
RECIPE_VERSION = 1

# The bench stand-in: Phi-3-mini's real layer shapes with fewer layers and random weights, so
# that every kernel runs at its real size on a small machine. Its replies are noise.
BENCH_CONFIG = dict(
    MODEL_CONFIG,
    **{k: DEFAULT.config[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                      "num_key_value_heads")},
    torch_dtype="bfloat16",  # as Phi-3-mini's checkpoint is stored
)
BENCH_LAYERS = 4  # default; Phi-3-mini has 32
PHI3_MINI_LAYERS = DEFAULT.layers

BANNER_NOTE = (
    "This is the phi3-aipc offline stand-in, not Phi-3: a 2-layer model whose replies are canned "
    "sentences memorized from data/standin_chats.json."
)


def load_tokenizer():
    """Phi-3's tokenizer from data/tokenizer, exactly as its tokenizer.json says: what
    AutoTokenizer loads from a Phi-3 model folder. From this bare folder (no config.json)
    transformers 5's AutoTokenizer would build its own LlamaTokenizer pipeline instead, which
    gives other ids after a special token ("You" 3492, not "\u2581You" 887)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)


def load_chats() -> list[dict]:
    """The fixed chats: each has `messages` (the prompt) and `reply` (the memorized answer)."""
    return json.loads(CHATS_FILE.read_text(encoding="utf-8"))["chats"]


def recipe_key() -> str:
    """A digest of everything that decides the stand-in's weights."""
    h = hashlib.sha256()
    h.update(json.dumps([MODEL_CONFIG, TRAINING, RECIPE_VERSION], sort_keys=True).encode())
    h.update(CHATS_FILE.read_bytes())
    h.update((TOKENIZER_DIR / "tokenizer.json").read_bytes())
    return h.hexdigest()[:16]


def stand_in_path() -> Path:
    """Where the stand-in for the current recipe lives in the cache (built or not)."""
    return cache_dir() / "stand-in" / recipe_key()


def ensure_stand_in(progress: bool = True) -> Path:
    """Return the stand-in's folder, building it (about half a minute on 2 cores) if needed."""
    return build_once(stand_in_path(), lambda tmp: build(tmp, progress=progress))


def bench_stand_in_path(layers: int = BENCH_LAYERS) -> Path:
    digest = hashlib.sha256(json.dumps([BENCH_CONFIG, layers, TRAINING["seed"], RECIPE_VERSION],
                                       sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "stand-in" / f"bench-{layers}-layers-{digest}"


def ensure_bench_stand_in(layers: int = BENCH_LAYERS, progress: bool = True) -> Path:
    """Return the bench stand-in's folder (Phi-3-mini's shapes, `layers` layers, random weights),
    building it if needed: about 1.3 GB on disk at 4 layers (bf16), 10-30 seconds."""
    return build_once(bench_stand_in_path(layers),
                      lambda tmp: build_bench(tmp, layers, progress=progress))


def build_bench(out: Path, layers: int, progress: bool = True) -> None:
    """Save a randomly initialized Phi-3-mini-shaped model with `layers` layers into `out`."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    if progress:
        print(f"Building the bench stand-in: Phi-3-mini's layer shapes, {layers} of its "
              f"{PHI3_MINI_LAYERS} layers, random weights...", flush=True)
    torch.manual_seed(TRAINING["seed"])
    config = Phi3Config(**{**BENCH_CONFIG, "num_hidden_layers": layers})
    model = Phi3ForCausalLM(config).to(torch.bfloat16).eval()
    save(model, out, 32000, f"# phi3-aipc bench stand-in ({layers} layers)\n\nPhi-3-mini's "
         "layer shapes with random weights, for timing only: its replies are noise.\n")
    made = {"route": "stand-in", "model": bench_name(layers), "precision": "bf16",
            "options": {"layers": layers, "seed": TRAINING["seed"]}}
    (out / MANIFEST).write_text(json.dumps(made, indent=2), encoding="utf-8")


# A stand-in per catalog model ("stand-in:phi-4-mini"): random weights from a fixed seed, 2 narrow
# layers, and every feature in which the variant differs from Phi-3-mini-4k kept exactly: the head
# width (96 or 128), the ratio of query to key/value heads, the partial rotary factor, the LongRoPE
# factors and window, tied embeddings, the vocabulary size and the tokenizer. Built in seconds
# (Phi-4-mini's tokenizer in about half a minute); its replies are noise and never stop early.
VARIANT_LAYERS = 2
VARIANT_RECIPE = 1
COPIED = ("vocab_size", "max_position_embeddings", "original_max_position_embeddings",
          "sliding_window", "rope_scaling", "partial_rotary_factor", "tie_word_embeddings")


def variant(short: str) -> Model:
    """The catalog model a "stand-in:<short>" stands in for."""
    found = {m.short: m for m in MODELS.values()}
    if short not in found:
        raise ModelNotFound(f"'stand-in:{short}' is not a stand-in; give one of "
                            f"{', '.join('stand-in:' + k for k in found)}, or 'stand-in'.")
    return found[short]


def variant_config(model: Model) -> dict:
    """A small config with `model`'s distinguishing features (see VARIANT_LAYERS)."""
    real = model.config
    head_dim = real["hidden_size"] // real["num_attention_heads"]
    group = real["num_attention_heads"] // real["num_key_value_heads"]
    kv_heads = 1 if group > 1 else 4  # Phi-4-mini: 3 query heads share 1 (24:8); Phi-3: 4 and 4
    hidden = kv_heads * group * head_dim  # 384 for all four: a multiple of int4's group of 128
    # Weights drawn with std 0.1, not transformers' 0.02: at 0.02 two layers barely move the
    # residual stream, so the reply is one token repeated whatever the positions (swapping the
    # long LongRoPE factors for the short ones changed nothing); at 0.1 the greedy reply is 31-32
    # distinct tokens, depends on the factors, and its top two logits stay >= 0.004 apart, far
    # above fp32's rounding (measured for Phi-3.5-mini and Phi-4-mini, short and long prompts).
    config = dict(MODEL_CONFIG, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=VARIANT_LAYERS, num_attention_heads=kv_heads * group,
                  num_key_value_heads=kv_heads, torch_dtype="bfloat16", initializer_range=0.1,
                  **{k: real[k] for k in COPIED if k in real})
    if has_phi4_vocabulary(config):
        config.update(bos_token_id=phi4_tokenizer.BOS_ID,
                      eos_token_id=phi4_tokenizer.EOS_TOKEN_IDS[-1],
                      pad_token_id=phi4_tokenizer.PAD_ID)
    return config


def has_phi4_vocabulary(config: dict) -> bool:
    """Whether a variant's config needs Phi-4-mini's tokenizer (200k) rather than Phi-3's (32k)."""
    return config["vocab_size"] > MODEL_CONFIG["vocab_size"]


def variant_stand_in_path(short: str) -> Path:
    config = variant_config(variant(short))
    digest = hashlib.sha256(json.dumps([config, TRAINING["seed"], VARIANT_RECIPE],
                                       sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "stand-in" / f"{short}-{digest}"


def ensure_variant_stand_in(short: str, progress: bool = True) -> Path:
    """Return the folder of "stand-in:<short>", building it if needed."""
    return build_once(variant_stand_in_path(short),
                      lambda tmp: build_variant(tmp, short, progress=progress))


def build_variant(out: Path, short: str, progress: bool = True) -> None:
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    model = variant(short)
    config = variant_config(model)
    phi4 = has_phi4_vocabulary(config)
    if progress:
        print(f"Building stand-in:{short}: {model.id}'s architecture in {VARIANT_LAYERS} narrow "
              "layers, random weights" + (" (and its tokenizer, about half a minute)" if phi4
                                          else "") + "...", flush=True)
    torch.manual_seed(TRAINING["seed"])
    net = Phi3ForCausalLM(Phi3Config(**config)).to(torch.bfloat16).eval()
    if phi4:
        phi4_tokenizer.build(out)
        eos, bos, pad = phi4_tokenizer.EOS_TOKEN_IDS, phi4_tokenizer.BOS_ID, phi4_tokenizer.PAD_ID
    else:
        for f in TOKENIZER_DIR.iterdir():
            shutil.copy(f, out / f.name)
        settings = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
        settings["model_max_length"] = config["max_position_embeddings"]  # 128k for LongRoPE
        (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2),
                                                   encoding="utf-8")
        eos, bos, pad = EOS_TOKEN_IDS, MODEL_CONFIG["bos_token_id"], MODEL_CONFIG["pad_token_id"]
    net.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos,
                                             pad_token_id=pad, do_sample=False)
    net.save_pretrained(out, safe_serialization=True)
    as_published(out / "config.json")
    tokenizer = "Phi-4-mini's, rebuilt from o200k_base" if phi4 else "Phi-3-mini's"
    (out / "README.md").write_text(
        f"# phi3-aipc stand-in:{short}\n\n{model.id}'s architecture ({model.note}) in "
        f"{VARIANT_LAYERS} narrow layers with random weights, and {tokenizer} tokenizer. For "
        "checking the routes token for token: its replies are noise.\n", encoding="utf-8")
    made = {"route": "stand-in", "model": f"stand-in:{short}", "precision": "bf16",
            "options": {"stands_in_for": model.id, "seed": TRAINING["seed"],
                        "recipe": VARIANT_RECIPE}}
    (out / MANIFEST).write_text(json.dumps(made, indent=2), encoding="utf-8")


def as_published(path: Path) -> None:
    """Rewrite a config.json saved by transformers 5 (`rope_parameters`) in the form the hub's
    Phi checkpoints have (`rope_theta`, `rope_scaling`), which every library here reads."""
    config = json.loads(path.read_text(encoding="utf-8"))
    rope = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    config["rope_scaling"] = None
    if rope.get("rope_type") == "longrope":
        config["rope_scaling"] = {"type": "longrope", "long_factor": rope["long_factor"],
                                  "short_factor": rope["short_factor"]}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def bench_name(layers: int) -> str:
    return "bench-stand-in" if layers == BENCH_LAYERS else f"bench-stand-in:{layers}"


def training_batch(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of each fixed chat with its reply, and of its prompt alone."""
    full, prompts = [], []
    for chat in load_chats():
        prompt = template_ids(tokenizer, chat["messages"], add_generation_prompt=True)
        reply = chat["messages"] + [{"role": "assistant", "content": chat["reply"]}]
        ids = template_ids(tokenizer, reply)
        # The template ends an assistant turn with <|end|> and the conversation with
        # <|endoftext|>; the model learns to stop at <|end|>.
        ids = ids[: ids.index(END_TOKEN_ID, len(prompt)) + 1]
        assert ids[: len(prompt)] == prompt, "chat template changed the prompt prefix"
        full.append(ids)
        prompts.append(prompt)
    return full, prompts


def build(out: Path, progress: bool = True) -> None:
    """Build, train and save the stand-in into the (empty) folder `out`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import Phi3Config, Phi3ForCausalLM

    tokenizer = load_tokenizer()
    full, prompts = training_batch(tokenizer)

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINING["threads"])  # the same reduction order on every machine
    torch.manual_seed(TRAINING["seed"])
    try:
        config = Phi3Config(**MODEL_CONFIG)
        model = Phi3ForCausalLM(config).float()
        width = max(len(ids) for ids in full)
        pad = MODEL_CONFIG["pad_token_id"]
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in full])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in full])
        labels = input_ids.masked_fill(mask == 0, -100)
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING["lr"])
        model.train()
        steps = tqdm(range(TRAINING["steps"]), desc="Training the stand-in", disable=not progress)
        for _ in steps:
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        check_memorized(model, full, prompts)
    finally:
        torch.set_num_threads(threads)

    save(model, out, pad, f"# phi3-aipc stand-in ({recipe_key()})\n\n{BANNER_NOTE}\n")
    made = {"route": "stand-in", "model": "stand-in", "precision": "fp32",
            "options": {"recipe": recipe_key(), **TRAINING}}
    (out / MANIFEST).write_text(json.dumps(made, indent=2), encoding="utf-8")


def save(model, out: Path, pad: int, readme: str) -> None:
    """A stand-in as a checkpoint folder: weights, generation config, tokenizer and README."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=EOS_TOKEN_IDS, pad_token_id=pad, do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, out / f.name)
    (out / "README.md").write_text(readme, encoding="utf-8")


def check_memorized(model, full: list[list[int]], prompts: list[list[int]]) -> None:
    """Fail the build unless greedy decoding reproduces every reply and its <|end|>."""
    import torch

    with torch.inference_mode():
        for ids, prompt in zip(full, prompts):
            seq = list(prompt)
            while len(seq) < len(ids):
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
                seq.append(int(logits.argmax()))
                if seq[-1] != ids[len(seq) - 1]:
                    raise RuntimeError(
                        "The stand-in did not memorize its fixed chats; the training recipe in "
                        "phi3_aipc/standin.py needs more steps."
                    )
