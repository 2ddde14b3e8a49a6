"""What watches a request and a message: `Hooks`, the points of their life, each a method that does
nothing, as dramatiq's middleware declares them. Tracing (tracing.py) is one implementation; a
part is handed its hooks when it is built and calls them at fixed places, whatever they do.

The points, in the order one message meets them:

- the writer: `request` around each HTTP request and `answered` with its status; the message
  `created` (by the request itself, or one of several it creates); `sending` around each
  SendMessageBatch;
- the worker: `receiving` around each ReceiveMessage and `received` with what it brought;
  `processing` around each attempt of the step; `settling` around each batched delete or
  visibility change (the message deleted, or given back); `dead_lettering` around a message's
  way to the dead-letter queue;
- both: `failed`, what a `request`, `sending`, `receiving`, `processing` or `settling` watch
  learns of a failure; `shutdown` at the process's end.

A context-manager point yields a watch, which the caller gives back to `answered`, `received` and
`failed`; `Hooks` yields one shared, empty context, so that watching nothing costs no object per
message. `combine` makes one `Hooks` of several, called in order.
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

    def answered(self, watch: Any, method: str, route: str, status: int) -> None:
        """The request was answered `status`; `route` is the spec's path, or `other`."""

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

    def settling(self, operation: str, queue: str, messages: Sequence[ReceivedMessage]) -> ContextManager[Any]:
        """Around one batched `operation` ("delete", or "change_visibility": given back) on `messages`."""
        return UNWATCHED

    def dead_lettering(self, message: ReceivedMessage) -> ContextManager[Any]:
        """Around the decision to dead-letter `message` and its copy's send."""
        return UNWATCHED

    # Both

    def failed(self, watch: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        """What a watch watched failed with `error` (`error_type` names it, if not its class)."""

    def shutdown(self) -> None:
        """The process ends: whatever the hooks still hold leaves."""


#: No hooks: what every part watches with unless it is given some.
NO_HOOKS = Hooks()


class HookList(Hooks):
    """Several hooks, each point calling them in order; a watch is the tuple of theirs."""

    def __init__(self, hooks: Sequence[Hooks]) -> None:
        self.hooks = tuple(hooks)
        self.context_attribute = next((hook.context_attribute for hook in self.hooks if hook.context_attribute), None)
        self.context_bytes = sum(hook.context_bytes for hook in self.hooks)

    @contextlib.contextmanager
    def _each(self, watches: list[ContextManager[Any]]) -> Iterator[tuple[Any, ...]]:
        with contextlib.ExitStack() as stack:
            yield tuple(stack.enter_context(watch) for watch in watches)

    def request(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> ContextManager[Any]:
        return self._each([hook.request(method, headers) for hook in self.hooks])

    def answered(self, watch: Any, method: str, route: str, status: int) -> None:
        for hook, its in zip(self.hooks, watch, strict=True):
            hook.answered(its, method, route, status)

    def created(self, message: OutgoingMessage, queue: str, *, by_request: bool = False) -> OutgoingMessage:
        for hook in self.hooks:
            message = hook.created(message, queue, by_request=by_request)
        return message

    def sending(self, queue: str, messages: Sequence[OutgoingMessage]) -> ContextManager[Any]:
        return self._each([hook.sending(queue, messages) for hook in self.hooks])

    def receiving(self, queue: str) -> ContextManager[Any]:
        return self._each([hook.receiving(queue) for hook in self.hooks])

    def received(self, watch: Any, messages: Sequence[ReceivedMessage]) -> None:
        for hook, its in zip(self.hooks, watch, strict=True):
            hook.received(its, messages)

    def processing(self, message: ReceivedMessage, queue: str) -> ContextManager[Any]:
        return self._each([hook.processing(message, queue) for hook in self.hooks])

    def settling(self, operation: str, queue: str, messages: Sequence[ReceivedMessage]) -> ContextManager[Any]:
        return self._each([hook.settling(operation, queue, messages) for hook in self.hooks])

    def dead_lettering(self, message: ReceivedMessage) -> ContextManager[Any]:
        return self._each([hook.dead_lettering(message) for hook in self.hooks])

    def failed(self, watch: Any, error: BaseException, error_type: Optional[str] = None) -> None:
        for hook, its in zip(self.hooks, watch, strict=True):
            hook.failed(its, error, error_type)

    def shutdown(self) -> None:
        for hook in self.hooks:
            hook.shutdown()


def combine(*hooks: Hooks) -> Hooks:
    """One `Hooks` calling each of `hooks` in order: NO_HOOKS for none (or only do-nothing
    ones), the one itself for one, so that a part with no hooks pays for no list."""
    flat: list[Hooks] = []
    for hook in hooks:
        flat.extend(hook.hooks if isinstance(hook, HookList) else (hook,))
    watching = [hook for hook in flat if type(hook) is not Hooks]
    if not watching:
        return NO_HOOKS
    return watching[0] if len(watching) == 1 else HookList(watching)
