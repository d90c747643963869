"""Request middleware. Body limits, enforced before the body is read: a declared
``Content-Length`` over the limit is refused at once (413), and a body streamed without one is
cut off the moment it passes the limit. Uploads of frames, photos and registries have their
own, larger limits; everything else (JSON: findings, plans, transitions) has
``server.max_body_mb``. And the request id every log line of a request carries."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from api.services.frames import MAX_FRAME_BYTES
from dustpatrol.logs import log_context

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPART_OVERHEAD = 1024 * 1024  # form boundaries and fields around the file
REGISTRY_BYTES = 50 * 1024 * 1024
UPLOAD_LIMITS = (
    (re.compile(r"^/flights/[^/]+/frames$"), MAX_FRAME_BYTES + MULTIPART_OVERHEAD),
    (re.compile(r"^/notices/[^/]+/photos$"), MAX_FRAME_BYTES + MULTIPART_OVERHEAD),
    (re.compile(r"^/sites/import$"), REGISTRY_BYTES + MULTIPART_OVERHEAD),
)


def body_limit(path: str, default: int) -> int:
    for pattern, limit in UPLOAD_LIMITS:
        if pattern.match(path):
            return limit
    return default


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than this endpoint takes ({limit // 2**20} MiB): "
        "send less at once (findings: post them in several collections)"
    )


class BodyLimit:
    """ASGI middleware applying `body_limit` to every HTTP request."""

    def __init__(self, app: ASGIApp, default_bytes: int) -> None:
        self.app = app
        self.default_bytes = default_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"], self.default_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(scope, send, limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)


async def _refuse(scope: Scope, send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Content too large",
            "status": 413,
            "detail": _too_large(limit),
            "instance": scope["path"],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestId:
    """ASGI middleware: every request gets an id (the caller's ``X-Request-ID`` when it is a
    plain token, else a new one), bound to everything logged while it is served and sent back
    in ``X-Request-ID``, so a log line, a client's error report and a proxy's log meet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        with log_context(request_id=request_id.decode()):
            await self.app(scope, receive, tagged)
