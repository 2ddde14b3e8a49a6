"""Finding the processing step PROCESSOR names, and telling how it must be run.

A step is a plain function of one message (run on WORKER_CONCURRENCY threads), an `async def`
one (run as coroutines on one event loop), or an http(s):// URL (http_step.py). Whatever cannot
be found or run is refused here, at start, with one line that says what was looked for.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import Any, Callable

from ..sqs import ReceivedMessage

#: The processing step: a function of one message. Returning means success (the message is
#: deleted); raising means failure (it comes back after a backoff), and `Reject` or `RetryLater`
#: (verdicts.py) say more. An `async def` step is awaited.
Processor = Callable[[ReceivedMessage], Any]

HOW_MODULES_ARE_FOUND = (
    "a module is found in the working directory, on PYTHONPATH, or as an installed package "
    "(run the worker from your project's folder, or set PYTHONPATH)"
)


class StepNotLoadable(Exception):
    """PROCESSOR names a step that cannot be run; the text says what was looked for and why."""


def runs_as_coroutine(step: Callable[..., Any]) -> bool:
    """Whether `step` is an `async def` function, or a callable object or partial of one: its
    attempts are then coroutines on the worker's event loop, not a thread each."""
    while isinstance(step, functools.partial):
        step = step.func
    if inspect.iscoroutinefunction(step):
        return True
    if inspect.isfunction(step) or inspect.ismethod(step) or not callable(step):
        return False
    return inspect.iscoroutinefunction(type(step).__call__)  # an object whose __call__ is async def


def load_step(spec: str) -> Processor:
    """The function `spec` ('module:function') names. Raises StepNotLoadable, in one line,
    when the module cannot be imported, the name is missing, or it is not callable, or when
    it is an async generator, which the worker cannot run as a step."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StepNotLoadable(
                f"PROCESSOR={spec}: no module named {module_name!r}: {HOW_MODULES_ARE_FOUND}; "
                f"looked in {', '.join(repr(path) for path in sys.path[:4] if path) or 'sys.path'}, …"
            ) from None
        raise StepNotLoadable(
            f"PROCESSOR={spec}: importing {module_name!r} failed: it imports {exc.name!r}, which is not "
            "installed in this environment"
        ) from None
    except Exception as exc:  # the user's module raised while it was imported
        raise StepNotLoadable(
            f"PROCESSOR={spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, function_name):
        public = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_"))
        raise StepNotLoadable(
            f"PROCESSOR={spec}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
            f"{function_name!r}; its functions: {', '.join(public[:10]) or 'none'}"
        )
    step = getattr(module, function_name)
    if not callable(step):
        raise StepNotLoadable(
            f"PROCESSOR={spec}: {function_name!r} in {module_name!r} is a {type(step).__name__}, not a function"
        )
    if inspect.isasyncgenfunction(step) or inspect.isgeneratorfunction(step):
        raise StepNotLoadable(
            f"PROCESSOR={spec}: {function_name!r} is a generator function: a step returns (or raises), it "
            "does not yield"
        )
    return step
