"""A chat with one model on one route, without a screen: what the chat widget draws and the tests
drive.

`ChatSession` keeps the choice (model, route, precision, device), loads the session when the
first message needs it (or wraps a model the notebook loaded), keeps the `Conversation`, and
answers one message at a time, in the caller's thread (`reply`) or in a thread of its own
(`send`, so a notebook's kernel stays free to take a Stop click). `stop()` makes the streamer
return True, which every route takes as "end the reply here" (finish_reason "stopped").
What happens is told to a `ChatView` (the widget is one; the default tells nothing).
"""
from __future__ import annotations

import threading
from pathlib import Path

from .chat import Conversation
from .errors import BadInput
from .models import ModelSource, resolve_model
from .routes import (
    GenerationRequest,
    GenerationResult,
    Session,
    artifact_markers,
    get_route,
    prepare_artifact,
)


class ChatView:
    """What a chat tells its screen, in order; each does nothing here."""

    def loading(self, route: str, precision: str, device: str) -> None:
        """The session is being loaded (the first time, the model is prepared: minutes)."""

    def note(self, text: str) -> None:
        """Something the reader should know: where it runs, turns the model no longer sees."""

    def asking(self, text: str) -> None:
        """The message goes to the model; the reply follows."""

    def streamed(self, text: str) -> None:
        """The reply so far."""

    def answered(self, result: GenerationResult) -> None:
        """The reply is complete (or stopped: `result.finish_reason == "stopped"`)."""

    def failed(self, error: Exception) -> None:
        """The reply failed; the chat goes on."""

    def idle(self) -> None:
        """Answered or failed: ready for the next message."""


class ChatSession:
    """A multi-turn chat on `route`, loading `model` (a name for `resolve_model`, or a
    ModelSource) with `precision` on `device` (None: the route's defaults) when first asked.

    `loaded` is a model the caller has already loaded with the route's library (with
    `artifact`, the folder it came from): the chat talks through it instead of loading a second
    copy. `system`, `max_new_tokens` and `context` go to the `Conversation`.
    """

    def __init__(self, route: str, model: str | ModelSource | None = None,
                 precision: str | None = None, device: str | None = None,
                 system: str | None = None, max_new_tokens: int = 256, greedy: bool = True,
                 context: int | None = None, loaded=None, artifact=None,
                 view: ChatView | None = None) -> None:
        get_route(route)  # an unknown route is refused here, not on the first message
        if loaded is not None and artifact is None:
            raise BadInput("Give the folder the loaded model came from too (artifact=...).")
        self.route, self.precision, self.device = route, precision, device
        self.model, self.greedy = model, greedy
        self.loaded, self.artifact = loaded, artifact
        self.conversation = Conversation(system, max_new_tokens, context)
        self.view = view or ChatView()
        self.source: ModelSource | None = None
        self.session: Session | None = None
        self.result: GenerationResult | None = None
        self.error: Exception | None = None  # why the last reply failed, if it did
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def choose(self, route: str | None = None, precision: str | None = None,
               device: str | None = None) -> None:
        """Another route, precision or device (None: keep it): the next message loads it; the
        conversation goes on."""
        self.route = route or self.route
        self.precision = precision or self.precision
        self.device = device or self.device
        self.drop_session()

    def choose_model(self, model: str | ModelSource) -> None:
        """Another model: forget the loaded one and the conversation (it was with that model)."""
        self.model, self.source = model, None
        self.drop_session()
        self.clear()

    def drop_session(self) -> None:
        """Forget the loaded model; the next message loads what is chosen."""
        if self.session is not None:
            self.session.close()
        self.session = None

    def clear(self) -> None:
        """Forget the turns so far and the last result."""
        self.conversation.clear()
        self.result = None

    def load(self) -> Session:
        """The session the chat talks through, loaded now if it is not yet."""
        if self.session is None:
            route = get_route(self.route)
            plan = route.plan(self.precision, self.device)  # None: the route's defaults, resolved
            self.view.loading(self.route, plan.precision, plan.device)
            if self.source is None:
                self.source = (self.model if isinstance(self.model, ModelSource)
                               else resolve_model(self.model, artifacts=artifact_markers()))
            if self.loaded is None:
                source, artifact = prepare_artifact(plan, self.source)
                self.session = route.load(plan, artifact, source.name)
            else:
                self.session = route.adopt(plan, self.loaded, Path(self.artifact),
                                           self.source.name)
            if self.session.device_note:
                self.view.note(self.session.device_note)
        return self.session

    def reply(self, text: str) -> GenerationResult:
        """Ask `text` and return the reply (kept in the conversation), in this thread."""
        session = self.load()
        messages, dropped = self.conversation.ask(session, text)
        if dropped:
            self.view.note(f"(The oldest {dropped} turn{'s' * (dropped > 1)} of this chat no "
                           f"longer fit {self.conversation.limit(session)}, so the model no "
                           "longer sees them.)")
        self.view.asking(text)
        streamed: list[str] = []

        def streamer(piece: str) -> bool:
            streamed.append(piece)
            self.view.streamed("".join(streamed))
            return self._stop.is_set()

        request = GenerationRequest(max_new_tokens=self.conversation.max_new_tokens,
                                    greedy=self.greedy)
        result = session.generate(messages, request, streamer=streamer)
        self.conversation.answered(messages, result.text)
        self.view.answered(result)
        return result

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def send(self, text: str) -> None:
        """Ask `text` in a thread of its own (one reply at a time: refused while busy)."""
        if self.busy:
            raise BadInput("Still answering: stop the reply first.")
        self.result, self.error = None, None
        self._stop.clear()
        self._thread = threading.Thread(target=self._reply, args=(text,), daemon=True)
        self._thread.start()

    def _reply(self, text: str) -> None:
        try:
            self.result = self.reply(text)
        except Exception as err:  # told to the view and raised by wait(): a thread's would vanish
            self.result, self.error = None, err
            self.view.failed(err)
        finally:
            self.view.idle()

    def stop(self) -> None:
        """End the reply being generated; the text so far stays, and joins the history."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> GenerationResult | None:
        """Block until the reply `send` started is done and return its result; if it failed,
        raise its error here."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result
