"""Notebook widgets: a device picker, a model picker, and a chat with Phi-3 on any route.

The chat widget draws a `chat_session.ChatSession` and wires its buttons to it: the session
loads the model, keeps the conversation and generates on a thread of its own, so the kernel
stays free to take the Stop button's click while tokens stream in.
"""
from __future__ import annotations

import html

from .catalog import DEFAULT_MODEL, MODELS
from .chat_session import ChatSession, ChatView
from .errors import BadInput
from .models import ModelSource, default_model
from .routes import GenerationResult, get_route

DEFAULT_SYSTEM = "You are a helpful AI assistant."
STYLE = """<style>
.chat-user, .chat-reply { white-space: pre-wrap; }
.chat-reply { padding-left: 1em; border-left: 3px solid #8ab4f8; }
.chat-stats, .chat-note { font-size: 85%; color: #666; }
.chat-note { font-style: italic; }
</style>"""


def device_picker(devices: list[str], value: str | None = None, description: str = "Device"):
    """A dropdown of the devices a runtime reports, e.g. `openvino.Core().available_devices`.

    The selected device is `picker.value`; it starts at `value`, or the first device.
    """
    import ipywidgets as widgets

    options = list(dict.fromkeys(devices))  # keep order, drop duplicates
    return widgets.Dropdown(options=options, value=value if value in options else options[0],
                            description=description)


def model_choices(current: str | None = None) -> list[tuple[str, str]]:
    """(label, name) for a model dropdown: the catalog's models, their stand-ins and the offline
    stand-in, and `current` (the default: PHI3_AIPC_MODEL, a folder) if it is none of those."""
    choices = [(f"{m.id} ({m.context_window // 1024}k)", m.id) for m in MODELS.values()]
    choices += [("stand-in (offline, memorized replies)", "stand-in")]
    choices += [(f"stand-in:{m.short} (offline, random weights)", f"stand-in:{m.short}")
                for m in MODELS.values()]
    current = current or DEFAULT_MODEL
    if current not in [name for _, name in choices]:
        choices.insert(0, (current, current))
    return choices


def model_picker(value: str | None = None, description: str = "Model"):
    """A dropdown of the models the suite knows (`model_choices`); `picker.value` is the name to
    give `resolve_model`, starting at `value` or the default model (PHI3_AIPC_MODEL)."""
    import ipywidgets as widgets

    value = value or default_model()
    return widgets.Dropdown(options=model_choices(value), value=value, description=description,
                            layout=widgets.Layout(width="60%"))


def stats_line(result: GenerationResult) -> str:
    """What goes under a reply: time to first token, speed, length, and where it ran."""
    m = result.metrics
    ttft = "n/a" if m.ttft_ms is None else f"{m.ttft_ms:.0f} ms"
    speed = "n/a" if m.tokens_per_s is None else f"{m.tokens_per_s:.1f} tokens/s"
    return (f"TTFT {ttft} · {speed} · {len(result.token_ids)} tokens ({result.finish_reason}) · "
            f"{result.route} {result.precision} on {result.device}")


class ChatWidget(ChatView):
    """A multi-turn chat on one of `routes`, with route, device and precision pickers: the view
    of a `ChatSession`, which loads the model, keeps the conversation and streams the reply.

    The history is kept within the model's context window: when the next prompt would not fit
    (leaving room for `max_new_tokens`), the oldest turns are dropped and a note says so.
    `context` overrides the model's window. The model is loaded on the first message and again
    whenever a picker changes. `send(text)` does what the Send button does; `wait()` blocks until
    the reply is complete and returns its GenerationResult.

    `loaded` is a model the notebook has already loaded with the route's library (with
    `artifact`, the folder it came from): the chat then talks through it instead of loading a
    second copy, and its pickers stay fixed on it. `pick_model=True` adds a model picker
    (`model_picker`); changing the model starts a new chat.
    """

    def __init__(self, route: str = "openvino", routes: list[str] | None = None,
                 model: str | ModelSource | None = None, precision: str | None = None,
                 device: str | None = None, system: str = DEFAULT_SYSTEM,
                 max_new_tokens: int = 256, greedy: bool = True,
                 context: int | None = None, loaded=None, artifact=None,
                 pick_model: bool = False) -> None:
        import ipywidgets as widgets

        names = list(routes or [route])
        for name in names:
            get_route(name)  # an unknown route is refused here, not on the first message
        if route not in names:
            raise BadInput(f"The chat starts on route {route!r}, which is not among its routes "
                           f"{', '.join(names)}.")
        self.chat = ChatSession(route, model, precision, device, system, max_new_tokens, greedy,
                                context, loaded, artifact, view=self)
        self._reply_item = None  # the transcript's line the reply streams into

        start = model.name if isinstance(model, ModelSource) else model
        self.model_choice = model_picker(start)
        if not pick_model or loaded is not None:
            self.model_choice.layout.display = "none"
        self.route = widgets.Dropdown(options=names, value=route, description="Route")
        if len(names) == 1:
            self.route.layout.display = "none"
        self.device = widgets.Dropdown(description="Device")
        self.precision = widgets.Dropdown(description="Precision")
        self._fill_pickers(precision, device)
        self.system = widgets.Textarea(value=system, description="System",
                                       placeholder="Optional: how the assistant should behave",
                                       layout=widgets.Layout(width="95%"))
        self.input = widgets.Text(description="You", placeholder="Type a message, press Send",
                                  layout=widgets.Layout(width="70%"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", button_style="warning",
                                          disabled=True)
        self.clear_button = widgets.Button(description="New chat")
        self.transcript = widgets.VBox()
        self.status = widgets.HTML("Ready. The model loads with the first message.")
        for w, name in [(self.model_choice, "chat-model"), (self.route, "chat-route"),
                        (self.device, "chat-device"),
                        (self.precision, "chat-precision"), (self.system, "chat-system"),
                        (self.input, "chat-input"), (self.send_button, "chat-send"),
                        (self.stop_button, "chat-stop"), (self.clear_button, "chat-clear"),
                        (self.transcript, "chat-transcript"), (self.status, "chat-status")]:
            w.add_class(name)

        self.model_choice.observe(lambda change: self._pick_model(change["new"]), "value")
        self.route.observe(lambda _: self._fill_pickers(), "value")
        self.device.observe(lambda change: self.chat.choose(device=change["new"]), "value")
        self.precision.observe(lambda change: self.chat.choose(precision=change["new"]), "value")
        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        self.box = widgets.VBox([
            widgets.HTML(STYLE), self.model_choice,
            widgets.HBox([self.route, self.device, self.precision]),
            self.system, self.transcript,
            widgets.HBox([self.input, self.send_button, self.stop_button, self.clear_button]),
            self.status])
        self._set_busy(False)

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    # The chat's state, as the notebooks and tests read it (the ChatSession's).
    model = property(lambda self: self.chat.model)
    loaded = property(lambda self: self.chat.loaded)
    artifact = property(lambda self: self.chat.artifact)
    greedy = property(lambda self: self.chat.greedy)
    source = property(lambda self: self.chat.source)
    session = property(lambda self: self.chat.session)
    result = property(lambda self: self.chat.result)
    error = property(lambda self: self.chat.error)  # why the last reply failed, if it did
    conversation = property(lambda self: self.chat.conversation)
    busy = property(lambda self: self.chat.busy)

    @property
    def history(self) -> list[dict]:
        """The turns so far (the conversation's)."""
        return self.conversation.history

    @property
    def context(self) -> int | None:
        """The context window the chat keeps to (None: the model's)."""
        return self.conversation.context

    @context.setter
    def context(self, tokens: int | None) -> None:
        self.conversation.context = tokens

    @property
    def max_new_tokens(self) -> int:
        return self.conversation.max_new_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, tokens: int) -> None:
        self.conversation.max_new_tokens = tokens

    def send(self, text: str | None = None) -> None:
        """Send `text` (default: what is typed in the box); the reply streams in the background."""
        text = self.input.value if text is None else text
        if self.busy:
            self.status.value = "Still answering: press Stop first."
            return
        if not text.strip():
            self.status.value = "Type a message first."
            return
        self.input.value = ""
        self.conversation.system = self.system.value
        self._set_busy(True)
        self.chat.send(text)

    def stop(self) -> None:
        """End the reply being generated; the text so far stays, and joins the history."""
        if self.busy:
            self.status.value = "Stopping ..."
            self.chat.stop()

    def wait(self, timeout: float | None = None) -> GenerationResult | None:
        """Block until the current reply is done and return its result; if the reply failed,
        raise its error here too (the widget shows it in its status line)."""
        return self.chat.wait(timeout)

    def clear(self) -> None:
        """Start a new chat: forget the history and empty the transcript."""
        if not self.busy:
            self.chat.clear()
            self.transcript.children = ()
            self.status.value = "New chat."

    def _fill_pickers(self, precision: str | None = None, device: str | None = None) -> None:
        route = get_route(self.route.value)
        devices = route.picker_devices()
        self.device.options = devices
        self.device.value = device if device in devices else devices[0]
        self.precision.options = list(route.precisions)
        self.precision.value = precision if precision in route.precisions \
            else route.default_precision
        self.chat.choose(route.name, self.precision.value, self.device.value)

    def _pick_model(self, name: str) -> None:
        """Another model: a new chat with it."""
        self.chat.choose_model(name)
        self.clear()
        self.status.value = f"New chat with {html.escape(name)}: it loads with the first message."

    def _set_busy(self, busy: bool) -> None:
        for w in (self.send_button, self.clear_button):
            w.disabled = busy
        for w in (self.model_choice, self.route, self.device,
                  self.precision):  # fixed on a model loaded outside
            w.disabled = busy or self.loaded is not None
        self.stop_button.disabled = not busy

    def _add(self, css_class: str, value: str):
        import ipywidgets as widgets

        item = widgets.HTML(value)
        item.add_class(css_class)
        self.transcript.children = (*self.transcript.children, item)
        return item

    # What the ChatSession tells (ChatView), drawn; called from the reply's thread.
    def loading(self, route: str, precision: str, device: str) -> None:
        self.status.value = (f"Loading {route} {precision} on {device} (the first time, "
                             "this prepares the model, which can take minutes) ...")

    def note(self, text: str) -> None:
        self._add("chat-note", html.escape(text))

    def asking(self, text: str) -> None:
        self._add("chat-user", "<b>You:</b> " + html.escape(text))
        self._reply_item = self._add("chat-reply", "")
        self.status.value = "Answering ... (Stop ends the reply here)"

    def streamed(self, text: str) -> None:
        self._reply_item.value = html.escape(text)

    def answered(self, result: GenerationResult) -> None:
        self._reply_item.value = html.escape(result.text)
        self._add("chat-stats", html.escape(stats_line(result)))
        self.status.value = ("Stopped: the reply so far stays in the chat."
                             if result.finish_reason == "stopped" else "Ready.")

    def failed(self, error: Exception) -> None:
        self.status.value = f"<b>{type(error).__name__}</b>: {html.escape(str(error))}"

    def idle(self) -> None:
        self._set_busy(False)
