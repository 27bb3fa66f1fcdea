"""Phi-4-mini's tokenizer, rebuilt offline for its stand-in.

Phi-4-mini's tokenizer is OpenAI's o200k_base byte-level BPE (its config.json names
"Xenova/gpt-4o" as the tokenizer), with Phi-4-mini's special tokens and chat template on top.
The BPE ranks are in data/o200k_base.tiktoken.gz, checked against their published SHA-256; this
module turns them into a Hugging Face tokenizer.json the way transformers' TikTokenConverter
does (merges recovered from the ranks, o200k's split pattern, byte-level decoding).

The real tokenizer names only some of the ids between 199998 and the model's 200064 rows; here
every one of them is named (`<|reserved_N|>`), because a randomly initialised stand-in can emit
any id and each must decode. The named ones have the real ids (tests/test_family.py pins them).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
O200K_FILE = DATA / "o200k_base.tiktoken.gz"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # uncompressed
# o200k_base's pre-tokenizer pattern, as tiktoken defines it.
PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])
# Phi-4-mini-instruct's named special tokens (its tokenizer_config.json).
SPECIALS = {199999: "<|endoftext|>", 200018: "<|endofprompt|>", 200019: "<|assistant|>",
            200020: "<|end|>", 200021: "<|user|>", 200022: "<|system|>", 200023: "<|tool|>",
            200024: "<|/tool|>", 200025: "<|tool_call|>", 200026: "<|/tool_call|>",
            200027: "<|tool_response|>", 200028: "<|tag|>"}
VOCAB_SIZE = 200064  # the model's embedding rows (config.json's vocab_size)
BOS_ID = PAD_ID = 199999
EOS_TOKEN_IDS = [200020, 199999]  # generation_config.json: <|end|>, <|endoftext|>
# Phi-4-mini-instruct's chat template, verbatim: no newline after a role tag, unlike Phi-3's.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + "
    "'<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + "
    "message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


def bpe_ranks() -> dict[bytes, int]:
    """o200k_base's ranks (token bytes -> id), after checking the file is the published one."""
    raw = gzip.decompress(O200K_FILE.read_bytes())
    if hashlib.sha256(raw).hexdigest() != O200K_SHA256:
        raise RuntimeError(f"{O200K_FILE} is not o200k_base (its SHA-256 differs); restore it "
                           "from git.")
    ranks = {}
    for line in raw.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build(out: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks = bpe_ranks()
    byte_encoder = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(byte_encoder[c] for c in b)

    merges = []  # (left, right, rank of the merged token), as TikTokenConverter recovers them
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((ranks[left], ranks[right], rank, left, right))
    merges.sort(key=lambda m: (m[2], m[0], m[1]))
    tokenizer = Tokenizer(BPE({text(t): r for t, r in ranks.items()},
                              [(text(m[3]), text(m[4])) for m in merges], fuse_unk=False))
    tokenizer.model.ignore_merges = True  # a word that is a whole token is that token
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # Added tokens take the next free ids in order: name every id up to the model's rows.
    first = len(ranks)
    names = [SPECIALS.get(i, f"<|reserved_{i}|>") for i in range(first, VOCAB_SIZE)]
    tokenizer.add_special_tokens([AddedToken(n, normalized=False, special=True) for n in names])
    for i, name in SPECIALS.items():
        if tokenizer.token_to_id(name) != i:
            raise RuntimeError(f"{name} got id {tokenizer.token_to_id(name)}, not {i}")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 131072,
              "bos_token": SPECIALS[BOS_ID], "eos_token": SPECIALS[199999],
              "pad_token": SPECIALS[PAD_ID], "unk_token": SPECIALS[199999],
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces":
              False, "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokens = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2), encoding="utf-8")
