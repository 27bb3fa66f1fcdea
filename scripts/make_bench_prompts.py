"""Write data/bench_prompts.json: distinct prompts of defined lengths in Phi-3 tokens.

Each prompt is a user turn: notes (this file's own sentences in a seeded order, cut word by word
until the whole chat prompt, template included, reaches the target length), then the request to
summarize them. The notes come first, so prompts differ from their first word: a pipeline that
reuses a cached common prefix gains nothing. The token counts stored are what Phi-3's tokenizer
gives for the formatted prompt; tests/test_bench.py checks them.
Run: python scripts/make_bench_prompts.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from phi3_aipc.chat import prompt_ids
from phi3_aipc.standin import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (32, 256, 1024)
PER_LENGTH = 6  # one warm-up and up to five timed repetitions, all different
INSTRUCTION = "\n\nSummarize these notes in one sentence."
SENTENCES = """\
The laptop was set up on a small desk near the window of the workshop room.
Each attendee brought a machine with a recent processor and enough memory for the exercises.
A language model predicts the next word from the words that came before it.
Quantization stores the weights of a model with fewer bits, trading a little accuracy for speed.
The neural processing unit is designed to run matrix operations at low power.
An integrated graphics processor shares the system memory with the central processor.
Reading the weights from memory often takes longer than the arithmetic done with them.
The first token of a reply waits for the whole prompt to be processed.
Later tokens come one at a time, each needing a pass over every weight of the model.
A cache of keys and values lets the model skip work on tokens it has already seen.
The organizers printed a short agenda and taped it to the door.
Coffee ran out before the second session, which nobody found surprising.
Some people prefer to read the code first and the explanation afterwards.
A benchmark is only useful when every run measures the same thing in the same way.
Noise from other programs can make a single measurement misleading.
The median of several runs is less sensitive to one slow run than the mean.
Exporting a model converts it from one file format into another.
Group size decides how many weights share one scale factor after quantization.
Smaller groups follow the weights more closely but need more scale factors.
A tokenizer splits text into pieces that the model has a number for.
The chat template wraps every message with markers for its role.
The river behind the building was high after a week of rain.
A volunteer collected the feedback forms at the end of the day.
Memory bandwidth is the rate at which data moves between the memory and the processor.
Two cores can still run a small model at a pace that is pleasant to read.
Threads that fight over the same cores slow each other down.
The slides were shared as a file that anyone could copy.
Keeping the same prompts across runs makes results comparable between machines.
An estimate should always say what it assumes.
At the end, everyone compared their numbers and found that machines differ a lot.""".splitlines()


def chat_length(tokenizer, text: str) -> int:
    messages = [{"role": "user", "content": text + INSTRUCTION}]
    return len(prompt_ids(tokenizer, messages))


def make_prompt(tokenizer, target: int, seed: int) -> tuple[str, int]:
    """Notes in the order of `seed`, word by word until the chat prompt reaches `target`."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < target * 2:  # more than enough words for any target
        sentences = SENTENCES[:]
        rng.shuffle(sentences)
        words += " ".join(sentences).split()
    low, high = 1, len(words)  # the fewest words whose prompt is at least `target` tokens
    while low < high:
        mid = (low + high) // 2
        if chat_length(tokenizer, " ".join(words[:mid])) >= target:
            high = mid
        else:
            low = mid + 1
    text = " ".join(words[:low])
    return text + INSTRUCTION, chat_length(tokenizer, text)


def main() -> None:
    tokenizer = load_tokenizer()
    prompts = {}
    for target in LENGTHS:
        prompts[str(target)] = []
        for i in range(PER_LENGTH):
            text, tokens = make_prompt(tokenizer, target, seed=target * 100 + i)
            prompts[str(target)].append({"tokens": tokens, "text": text})
    out = {
        "about": "Benchmark prompts: for each target length, distinct user turns whose chat "
                 "prompt (Phi-3 template included) is `tokens` long with Phi-3's tokenizer. "
                 "Made by scripts/make_bench_prompts.py.",
        "prompts": prompts,
    }
    path = ROOT / "data" / "bench_prompts.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for target, items in prompts.items():
        print(target, [p["tokens"] for p in items])


if __name__ == "__main__":
    main()
