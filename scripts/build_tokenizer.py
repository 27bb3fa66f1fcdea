"""Rebuild Phi-3-mini's tokenizer files in data/tokenizer/ from an offline source.

Phi-3-mini's tokenizer is the 32,000-entry LLaMA SentencePiece BPE vocabulary plus Phi-3's own
special tokens (ids 32000-32010) and its chat template. The npm package `llama-tokenizer-js`
(MIT) carries that vocabulary and its merges, base64-encoded in `llama-tokenizer.js`; its
`data-conversion.py` documents the encoding. This script turns them back into a Hugging Face
`tokenizer.json` with Phi-3's settings. Run it only to regenerate the committed files:

    python scripts/build_tokenizer.py            # fetches the package with `npm pack`
    python scripts/build_tokenizer.py path/to/llama-tokenizer.js
"""
from __future__ import annotations

import base64
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-tokenizer-js@1.2.2"
OUT = Path(__file__).resolve().parents[1] / "data" / "tokenizer"

# Phi-3-mini-4k-instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Phi-3's added tokens: (id, text, rstrip). All but <|endoftext|> strip the whitespace after them.
PHI3_SPECIALS = [
    (32000, "<|endoftext|>", False),
    (32001, "<|assistant|>", True),
    (32002, "<|placeholder1|>", True),
    (32003, "<|placeholder2|>", True),
    (32004, "<|placeholder3|>", True),
    (32005, "<|placeholder4|>", True),
    (32006, "<|system|>", True),
    (32007, "<|end|>", True),
    (32008, "<|placeholder5|>", True),
    (32009, "<|placeholder6|>", True),
    (32010, "<|user|>", True),
]


def fetch_js() -> Path:
    tmp = Path(tempfile.mkdtemp())
    subprocess.run(["npm", "pack", PACKAGE], cwd=tmp, check=True, capture_output=True)
    (tgz,) = tmp.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extract("package/llama-tokenizer.js", tmp, filter="data")
    return tmp / "package" / "llama-tokenizer.js"


def read_vocab_and_merges(js: Path) -> tuple[list[str], list[tuple[str, str]]]:
    text = js.read_text(encoding="utf-8")
    vocab_b64 = re.search(r'const llama_vocab_base64 = "([^"]+)"', text).group(1)
    merges_b64 = re.search(r'const llama_merges_binary = "([^"]+)"', text).group(1)
    vocab = base64.b64decode(vocab_b64).decode("utf-8").split("\n")
    raw = base64.b64decode(merges_b64)
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [(vocab[ids[i]], vocab[ids[i + 1]]) for i in range(0, len(ids), 2)]
    return vocab, merges


def build(js: Path, out: Path = OUT) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import LlamaTokenizerFast

    vocab, merges = read_vocab_and_merges(js)
    assert len(vocab) == 32000, len(vocab)
    model = BPE(
        vocab={tok: i for i, tok in enumerate(vocab)},
        merges=merges,
        unk_token="<unk>",
        fuse_unk=True,
        byte_fallback=True,
    )
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")]
    )
    for token_id, content, rstrip in PHI3_SPECIALS:
        assert tok.get_vocab_size(with_added_tokens=True) == token_id
        tok.add_special_tokens(
            [AddedToken(content, rstrip=rstrip, lstrip=False, normalized=False, special=True)]
        )

    fast = LlamaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        add_bos_token=False,
        add_eos_token=False,
        legacy=False,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    out.mkdir(parents=True, exist_ok=True)
    # The chat template goes into tokenizer_config.json, where every route (ORT GenAI too) reads it.
    fast.save_pretrained(out, save_jinja_files=False)
    ids = fast("Can you introduce yourself?")["input_ids"]
    assert ids == [1815, 366, 14944, 7535, 29973], ids
    print(f"wrote {out}")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else fetch_js())
