"""What watches a request and a message: `Hooks`, the points of their life, each a method that does
nothing, as dramatiq's middleware declares them. Tracing (tracing.py) and the writer's and the
worker's Prometheus metrics (metrics.WriterMetrics, metrics.WorkerMetrics) are implementations;
a part is handed its hooks when it is built and calls them at fixed places, whatever they do,
never asking which are there.

The points, in the order one message meets them:

- the writer: `request` around each HTTP request and `answered` with its status; the message
  `created` (by the request itself, or as one of several); `sending` around each
  SendMessageBatch;
- the worker: `receiving` around each ReceiveMessage and `received` with what it brought;
  `processing` around each attempt of the step, and `attempted` as the settler takes its
  outcome; then `retried`, or `dead_lettered` and `dead_lettering` around the dead-letter
  copy's way; `settling` around each batched delete or visibility change, and `settled` once
  SQS took it (the message deleted, or given back);
- both: `failed`, what a watch learns of a failure; `shutdown` at the process's end.

A point named in the present (`request`, `sending`, `receiving`, `processing`, `settling`,
`dead_lettering`) is a context manager whose value, a watch, the caller gives back to
`answered`, `received` and `failed`. Hooks' own yield one shared, empty context, so that
watching nothing costs no object per message. `combine` makes one `Hooks` of several, called in
order; when only one of them watches, its watches are used as they are.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator, Optional, Sequence, TypeAlias

#: sqs.OutgoingMessage and sqs.ReceivedMessage: named, not imported, since sqs.py calls the hooks
#: and a module of the package never imports one that imports it back.
OutgoingMessage: TypeAlias = Any
ReceivedMessage: TypeAlias = Any

#: What a point that watches nothing gives: one context, used again and again.
UNWATCHED: ContextManager[Any] = contextlib.nullcontext()


class Hooks:
    """The points of a request's and a message's life; each does nothing. Subclass it and
    override the points you watch."""

    #: The message attribute these hooks add to every message the writer sends (taken from the
    #: user's ten), and what it adds to the message's size; None and 0 when they add none.
    context_attribute: Optional[str] = None
    context_bytes = 0

    # The writer

    def request(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> ContextManager[Any]:
        """Around one HTTP request, with its ASGI `headers`."""
        return UNWATCHED

    def answered(self, watch: Any, method: str, route: str, status: int, duration_s: float) -> None:
        """The request was answered `status` after `duration_s`; `route` is the spec's path, or `other`."""

    def created(self, message: OutgoingMessage, queue: str, *, by_request: bool = False) -> OutgoingMessage:
        """A message is created for `queue`: by the request itself (`by_request`, the one message
        it sends) or as one of several. Returns the message to send (carrying, say, a context)."""
        return message

    def sending(self, queue: str, messages: Sequence[OutgoingMessage]) -> ContextManager[Any]:
        """Around one SendMessageBatch carrying `messages`."""
        return UNWATCHED

    # The worker (and the writer's read routes)

    def receiving(self, queue: str) -> ContextManager[Any]:
        """Around one ReceiveMessage."""
        return UNWATCHED

    def received(self, watch: Any, messages: Sequence[ReceivedMessage]) -> None:
        """What that ReceiveMessage brought (perhaps nothing)."""

    def processing(self, message: ReceivedMessage, queue: str) -> ContextManager[Any]:
        """Around one attempt of the step on `message`."""
        return UNWATCHED

    def attempted(self, message: ReceivedMessage, error: Optional[BaseException], step_s: float) -> None:
        """An attempt ended, as the settler takes it: it took `step_s`; `error` is None when it
        succeeded."""

    def retried(self, message: ReceivedMessage, error: BaseException, delay_s: float) -> None:
        """The failed attempt is to come back in `delay_s`."""

    def settling(self, operation: str, queue: str, messages: Sequence[ReceivedMessage]) -> ContextManager[Any]:
        """Around one batched `operation` on `messages`: "delete", or "change_visibility" (back
        after a backoff, or at once)."""
        return UNWATCHED

    def settled(self, message: ReceivedMessage, how: str) -> None:
        """SQS took what became of `message`: `how` says what ("deleted", "rescheduled",
        "given back", "deleted after dead-lettering", "deleted as a duplicate", ...)."""

    def dead_lettering(self, message: ReceivedMessage) -> ContextManager[Any]:
        """Around the decision to dead-letter `message` and its copy's send."""
        return UNWATCHED

    def dead_lettered(self, message: ReceivedMessage, error: BaseException) -> None:
        """`message` goes to the dead-letter queue for `error` (a `Reject`, or its last attempt's)."""

    # Both

    def failed(self, watch: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        """What a watch watched failed with `error` (`error_type` names it, if not its class)."""

    def shutdown(self) -> None:
        """The process ends: whatever the hooks still hold leaves."""


#: No hooks: what every part watches with unless it is given some.
NO_HOOKS = Hooks()


#: The points that yield a watch; `answered`, `received` and `failed` are given it back.
WATCHING_POINTS = ("request", "sending", "receiving", "processing", "settling", "dead_lettering")


#: Every point of Hooks: its public methods, read from the class so that a new point is one.
POINTS = tuple(name for name, value in vars(Hooks).items() if callable(value) and not name.startswith("_"))


def does_something(hook: Hooks) -> bool:
    """Whether `hook` overrides any point or adds a context to messages (tracing off does neither)."""
    return hook.context_attribute is not None or any(overrides(hook, point) for point in POINTS)


def overrides(hook: Hooks, point: str) -> bool:
    """Whether `hook` does something at `point` (its class overrides Hooks' do-nothing method)."""
    return getattr(type(hook), point) is not getattr(Hooks, point)


class HookList(Hooks):
    """Several hooks, each point calling them in order. Where only one of them watches (overrides
    a point that yields a watch), its watch is the list's, so that such a point costs what it
    costs that hook alone; where several do, a watch is the tuple of theirs."""

    def __init__(self, hooks: Sequence[Hooks]) -> None:
        self.hooks = tuple(hooks)
        self.context_attribute = next((hook.context_attribute for hook in self.hooks if hook.context_attribute), None)
        self.context_bytes = sum(hook.context_bytes for hook in self.hooks)
        self.watchers = tuple(hook for hook in self.hooks if any(overrides(hook, p) for p in WATCHING_POINTS))
        # the one that watches, or with none Hooks' own (one shared empty context): no list a call;
        # None when several do
        self._watcher: Optional[Hooks] = NO_HOOKS
        if self.watchers:
            self._watcher = self.watchers[0] if len(self.watchers) == 1 else None
        # once a message: only the hooks that do something there
        self._attempted = tuple(hook for hook in self.hooks if overrides(hook, "attempted"))
        self._settled = tuple(hook for hook in self.hooks if overrides(hook, "settled"))

    def _watch(self, points: list[ContextManager[Any]]) -> ContextManager[Any]:
        if not points:  # none of them watches: no object per message
            return UNWATCHED

        @contextlib.contextmanager
        def each() -> Iterator[tuple[Any, ...]]:
            with contextlib.ExitStack() as stack:
                yield tuple(stack.enter_context(point) for point in points)

        return each()

    def _watch_of(self, hook: Hooks, watch: Any) -> Any:
        """What `hook` itself yielded, of a watch this list yielded (None for one that does not watch)."""
        if self._watcher is not None:
            return watch if hook is self._watcher else None
        return watch[self.watchers.index(hook)] if hook in self.watchers else None

    def request(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> ContextManager[Any]:
        if self._watcher is not None:
            return self._watcher.request(method, headers)
        return self._watch([hook.request(method, headers) for hook in self.watchers])

    def answered(self, watch: Any, method: str, route: str, status: int, duration_s: float) -> None:
        for hook in self.hooks:
            hook.answered(self._watch_of(hook, watch), method, route, status, duration_s)

    def created(self, message: OutgoingMessage, queue: str, *, by_request: bool = False) -> OutgoingMessage:
        for hook in self.hooks:
            message = hook.created(message, queue, by_request=by_request)
        return message

    def sending(self, queue: str, messages: Sequence[OutgoingMessage]) -> ContextManager[Any]:
        if self._watcher is not None:
            return self._watcher.sending(queue, messages)
        return self._watch([hook.sending(queue, messages) for hook in self.watchers])

    def receiving(self, queue: str) -> ContextManager[Any]:
        if self._watcher is not None:
            return self._watcher.receiving(queue)
        return self._watch([hook.receiving(queue) for hook in self.watchers])

    def received(self, watch: Any, messages: Sequence[ReceivedMessage]) -> None:
        for hook in self.hooks:
            hook.received(self._watch_of(hook, watch), messages)

    def processing(self, message: ReceivedMessage, queue: str) -> ContextManager[Any]:
        if self._watcher is not None:
            return self._watcher.processing(message, queue)
        return self._watch([hook.processing(message, queue) for hook in self.watchers])

    def attempted(self, message: ReceivedMessage, error: Optional[BaseException], step_s: float) -> None:
        for hook in self._attempted:
            hook.attempted(message, error, step_s)

    def retried(self, message: ReceivedMessage, error: BaseException, delay_s: float) -> None:
        for hook in self.hooks:
            hook.retried(message, error, delay_s)

    def settling(self, operation: str, queue: str, messages: Sequence[ReceivedMessage]) -> ContextManager[Any]:
        if self._watcher is not None:
            return self._watcher.settling(operation, queue, messages)
        return self._watch([hook.settling(operation, queue, messages) for hook in self.watchers])

    def settled(self, message: ReceivedMessage, how: str) -> None:
        for hook in self._settled:
            hook.settled(message, how)

    def dead_lettering(self, message: ReceivedMessage) -> ContextManager[Any]:
        if self._watcher is not None:
            return self._watcher.dead_lettering(message)
        return self._watch([hook.dead_lettering(message) for hook in self.watchers])

    def dead_lettered(self, message: ReceivedMessage, error: BaseException) -> None:
        for hook in self.hooks:
            hook.dead_lettered(message, error)

    def failed(self, watch: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        for hook in self.hooks:
            hook.failed(self._watch_of(hook, watch), error, error_type)

    def shutdown(self) -> None:
        for hook in self.hooks:
            hook.shutdown()


def combine(*hooks: Hooks) -> Hooks:
    """One `Hooks` calling each of `hooks` in order, leaving out those that do nothing (tracing
    off among them): NO_HOOKS for none left, the one itself for one, so that a part with no
    hooks pays for no list."""
    flat: list[Hooks] = []
    for hook in hooks:
        flat.extend(hook.hooks if isinstance(hook, HookList) else (hook,))
    watching = [hook for hook in flat if does_something(hook)]
    if not watching:
        return NO_HOOKS
    return watching[0] if len(watching) == 1 else HookList(watching)
