"""The writer's refusals of a request: each names the HTTP status and title it is answered with.

Handlers raise them; server.py turns every one into a problem+json response.
"""

from __future__ import annotations


class RequestRefused(Exception):
    """The request cannot be done as asked; the text is the problem's `detail`."""

    status = 400
    title = "Bad request"
