"""Checking a presented key (the writer's API_KEYS, the console's CONSOLE_KEYS) against the
configured ones, in time that tells nothing of which key, or how much of one, matched."""

from __future__ import annotations

import hmac
from typing import Iterable, Optional


class Keys:
    """The configured keys; `matches` compares a presented one with every one of them, none
    ending the loop early."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [key.encode("utf-8") for key in sorted(keys)]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def matches(self, presented: Optional[str]) -> bool:
        if presented is None:
            return False
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
