"""The tokens the read routes hand out with each message: SQS's receipt handle, encoded with the
queue it is for and the delivery's receive count, so that anything that is not a token of this
queue is refused before any SQS call, and any writer process or replica takes any token (nothing
is kept between requests).

    r1.<queue tag>.<receive count>.<receipt handle, base64url>[.<copy>.<signature>]

On a message's last allowed receive (MAX_RECEIVE_COUNT) the token also carries a copy of the
message (compressed JSON, base64url), signed with READ_TOKEN_SECRET: given back then, the message
goes to the dead-letter queue with the reader's reason, and SQS cannot give its body again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import zlib
from dataclasses import dataclass
from typing import Any, Optional

from ..sqs import ReceivedMessage

VERSION = "r1"


class TokenError(ValueError):
    """Not a token of this queue: the text says what is wrong with it."""


@dataclass(frozen=True)
class Token:
    """What a token says: the receipt handle, the receive count it was given on, and on the last
    allowed receive the message itself (None when the signature does not hold: a token made by
    a writer with another READ_TOKEN_SECRET)."""

    receipt_handle: str
    receive_count: int
    copy: Optional[ReceivedMessage] = None
    carries_copy: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not text.replace("-", "").replace("_", "").isalnum() or not text.isascii():
        raise TokenError("it is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("it is not base64url") from None


class Tokens:
    """Makes and reads the tokens of one queue. `secret`: READ_TOKEN_SECRET; empty, one made at
    random for this process (a copy signed by another process then does not hold)."""

    def __init__(self, queue_name: str, secret: str = "") -> None:
        self.tag = hashlib.sha256(queue_name.encode("utf-8")).hexdigest()[:8]
        self._key = secret.encode("utf-8") if secret else secrets.token_bytes(32)

    def _sign(self, handle: str, copy: str) -> str:
        return _b64(hmac.new(self._key, f"{self.tag}\n{handle}\n{copy}".encode("ascii"), hashlib.sha256).digest()[:18])

    def make(self, message: ReceivedMessage, *, with_copy: bool) -> str:
        """The token of this delivery; `with_copy` on its last allowed receive."""
        parts = [VERSION, self.tag, str(message.receive_count), _b64(message.receipt_handle.encode("utf-8"))]
        if with_copy:
            copy = _b64(zlib.compress(json.dumps(_copy_of(message), separators=(",", ":")).encode("utf-8")))
            parts += [copy, self._sign(parts[3], copy)]
        return ".".join(parts)

    def read(self, token: str) -> Token:
        """What `token` says; TokenError when it is no token of this queue."""
        parts = token.split(".")
        if len(parts) not in (4, 6) or parts[0] != VERSION:
            raise TokenError("it is not a token from POST /api/messages/receive")
        if parts[1] != self.tag:
            raise TokenError("it is a token of another queue")
        if not (parts[2].isascii() and parts[2].isdigit() and len(parts[2]) <= 9):
            raise TokenError("its receive count is not a number")
        try:
            handle = _unb64(parts[3]).decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError("its receipt handle is not text") from None
        if not handle:
            raise TokenError("it holds no receipt handle")
        if len(parts) == 4:
            return Token(handle, int(parts[2]))
        if not hmac.compare_digest(parts[5], self._sign(parts[3], parts[4])):
            return Token(handle, int(parts[2]), carries_copy=True)  # another secret's: the copy is not trusted
        try:
            copy = _message_from(json.loads(zlib.decompress(_unb64(parts[4]))), handle)
        except (zlib.error, ValueError, KeyError, TypeError):
            raise TokenError("its copy of the message cannot be read") from None
        return Token(handle, int(parts[2]), copy=copy, carries_copy=True)


def _copy_of(message: ReceivedMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "body": message.body,
        "count": message.receive_count,
        "attributes": dict(message.attributes),
        "group": message.group_id,
        "dedup": message.deduplication_id,
        "trace": message.trace_header,
        "sent": message.sent_at_s,
    }


def _message_from(copy: dict[str, Any], handle: str) -> ReceivedMessage:
    return ReceivedMessage(
        id=str(copy["id"]),
        body=str(copy["body"]),
        receipt_handle=handle,
        receive_count=int(copy["count"]),
        sent_at_s=copy.get("sent"),
        attributes={str(k): str(v) for k, v in dict(copy["attributes"]).items()},
        group_id=copy.get("group"),
        deduplication_id=copy.get("dedup"),
        trace_header=copy.get("trace"),
    )
