"""Messages -> prompt through the tokenizer's own chat template; stop tokens from the model."""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInput


def build_messages(prompt: str, system: str | None = None,
                   history: list[dict] | None = None) -> list[dict]:
    """A chat as the template expects it: optional system turn, earlier turns, the new prompt."""
    if not prompt or not prompt.strip():
        raise BadInput("The prompt is empty. Type a question or instruction.")
    messages = [{"role": "system", "content": system}] if system else []
    return messages + list(history or []) + [{"role": "user", "content": prompt}]


ROLES = ("system", "user", "assistant")


def check_messages(messages) -> list[dict]:
    """Refuse a chat the templates cannot render: it must be a non-empty list of {"role":
    system/user/assistant, "content": text} that ends with the user's turn."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)) \
            or not messages:
        raise BadInput("messages must be a non-empty list of {'role': ..., 'content': ...} "
                       f"turns; got {type(messages).__name__}.")
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES \
                or not isinstance(turn.get("content"), str):
            raise BadInput(f"messages[{i}] must be {{'role': one of {', '.join(ROLES)}, "
                           f"'content': text}}; got {turn!r:.80}.")
    if messages[-1]["role"] != "user":
        raise BadInput("The last message must be the user's turn, which the model answers.")
    return list(messages)


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The exact text the model sees, ending with the `<|assistant|>` turn it must complete."""
    with broken_template_is_bad_input():
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not text:
        raise BadInput(EMPTY_TEMPLATE)
    return text


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `prompt_text`."""
    return template_ids(tokenizer, messages, add_generation_prompt=True)


def template_ids(tokenizer, messages: list[dict], **options) -> list[int]:
    """The chat template's token ids. transformers 5 returns a dict ({"input_ids": ...}) by
    default and 4.x a list; asking for the dict works in both (.venv-npu has 4.57)."""
    with broken_template_is_bad_input():
        ids = list(tokenizer.apply_chat_template(messages, return_dict=True, **options)
                   ["input_ids"])
    if not ids:
        raise BadInput(EMPTY_TEMPLATE)
    return ids


EMPTY_TEMPLATE = ("The model's chat template renders nothing (an empty chat_template.jinja?). "
                  "Download the model again, or delete the empty template file.")


@contextmanager
def broken_template_is_bad_input():
    """A chat template that does not parse or render is the model folder's fault: say so."""
    try:
        yield
    except BadInput:
        raise
    except Exception as err:
        import jinja2

        if isinstance(err, jinja2.TemplateError):
            raise BadInput(f"The model's chat template is broken ({type(err).__name__}: {err}). "
                           "Download the model again.") from None
        raise


def stop_token_ids(model_dir: Path) -> list[int]:
    """The ids that end a reply, from the model's generation config (Phi-3: 32000, 32001, 32007)."""
    import json

    from transformers import GenerationConfig

    model_dir = Path(model_dir)
    if (model_dir / "generation_config.json").is_file():
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    else:  # older checkpoints keep it in config.json only
        eos = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get(
            "eos_token_id")
    return [eos] if isinstance(eos, int) else list(eos or [])


MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
MAX_SEED = 2**32 - 1


def check_sampling(temperature: float, top_p: float) -> None:
    """Refuse sampling settings that cannot work (or that the libraries turn into nonsense: a
    temperature of 1e-300 divides the logits into infinities)."""
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{name} must be a number; got {value!r}.")
    if not temperature > 0:
        raise BadInput(f"temperature must be above 0; got {temperature}. For always the likeliest "
                       "token use greedy decoding (--greedy).")
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise BadInput(f"temperature must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}; got "
                       f"{temperature}. For always the likeliest token use --greedy.")
    if not 0 < top_p <= 1:
        raise BadInput(f"top_p must be in (0, 1]; got {top_p}.")


def check_seed(seed) -> None:
    """A seed every library takes: a whole number that fits in 32 bits."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= MAX_SEED):
        raise BadInput(f"seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")


def check_fits(prompt_tokens: int, max_new_tokens: int, context: int) -> None:
    """Refuse a request the model's context window cannot hold."""
    if max_new_tokens < 1:
        raise BadInput(f"max_new_tokens is {max_new_tokens}; it must be at least 1.")
    if prompt_tokens >= context:
        raise BadInput(f"The prompt is {prompt_tokens} tokens but the model's context window is "
                       f"{context}. Shorten the prompt or drop earlier turns.")
    if prompt_tokens + max_new_tokens > context:
        raise BadInput(f"{prompt_tokens} prompt tokens + {max_new_tokens} new tokens exceed the "
                       f"context window of {context}. Lower max_new_tokens to at most "
                       f"{context - prompt_tokens}.")


def fit_history(count: Callable[[list[dict]], int], prompt: str, system: str | None,
                history: list[dict], budget: int) -> tuple[list[dict], int]:
    """The chat to send, with the oldest turns of `history` dropped until its prompt (counted
    by `count`, e.g. a session's `count_prompt_tokens`) is at most `budget` tokens; and how
    many turns went.

    A turn is a user message and the reply to it. If even the new prompt alone is over budget,
    it is returned without history (the route then refuses it with a clear message).
    """
    turns = [history[i:i + 2] for i in range(0, len(history), 2)]
    for dropped in range(len(turns) + 1):
        earlier = [m for turn in turns[dropped:] for m in turn]
        messages = build_messages(prompt, system, earlier)
        if count(messages) <= budget:
            break
    return messages, dropped


class Conversation:
    """A multi-turn chat with one loaded model: the system prompt and the turns so far, kept
    within what the model takes. The chat widget, the CLI and the tests use it.

    The next prompt must fit the model's context window with room for the reply
    (`max_new_tokens`), and the device's own prompt limit where it has one (the NPU pipeline's
    MAX_PROMPT_LEN): when it would not, the oldest turns are dropped, whole. `context`
    overrides the model's window. `session` is anything with `count_prompt_tokens`,
    `context_window` and `prompt_limit` (a loaded Session).
    """

    def __init__(self, system: str | None = None, max_new_tokens: int = 256,
                 context: int | None = None) -> None:
        self.system, self.max_new_tokens, self.context = system, max_new_tokens, context
        self.history: list[dict] = []

    def window(self, session) -> tuple[int, int]:
        """The context window, and how many prompt tokens fit in it now."""
        context = self.context or session.context_window
        budget = context - self.max_new_tokens
        limit = session.prompt_limit
        return context, min(budget, limit) if limit else budget

    def limit(self, session) -> str:
        """What the next prompt must fit, in words: the device's prompt limit where that is the
        tighter (dropped turns are then its doing), else the context window."""
        context, budget = self.window(session)
        if budget < context - self.max_new_tokens:
            return f"the device's {budget}-token prompt limit (MAX_PROMPT_LEN)"
        return f"the model's {context}-token context window with room for the reply"

    def ask(self, session, prompt: str) -> tuple[list[dict], int]:
        """The messages that ask `prompt` next, and how many old turns were dropped to fit them
        (they are gone from the history too). Refuses a prompt too long even on its own."""
        context, budget = self.window(session)
        messages, dropped = fit_history(session.count_prompt_tokens, prompt,
                                        (self.system or "").strip() or None, self.history,
                                        budget)
        check_fits(session.count_prompt_tokens(messages), self.max_new_tokens, context)
        del self.history[:2 * dropped]
        return messages, dropped

    def answered(self, messages: list[dict], reply: str) -> None:
        """Keep the turn `messages` asked, with its `reply`."""
        self.history += [messages[-1], {"role": "assistant", "content": reply}]

    def clear(self) -> None:
        self.history = []
