"""What every request meets before the service: API key, content type, body size, readiness.

An ASGI middleware rather than checks inside the endpoints, because BentoML parses the body
before an endpoint runs (and reads any content type as JSON): an oversized or mistyped body must
be refused before that. Every refusal is a JSON body `{"error": ...}` that says what to change.

It also replaces BentoML's OpenAPI document (`/docs.json`) with the service's own
(`serving/openapi.py`), which knows the record contract of the model version being served.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from serving.hardening import CLIENT

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths that need the API key when one is configured. Health, readiness, metrics and the docs
# stay open, so that orchestrators and Prometheus need no secret.
PROTECTED_PATHS = frozenset({"/predict", "/feedback", "/model"})
JSON_PATHS = frozenset({"/predict", "/feedback"})
MODEL_PATHS = frozenset({"/predict", "/model"})


class RequestGuard:
    """Refuse requests the service must not process, with a status and a message.

    Args:
        app: the ASGI application behind the guard.
        api_key: the key clients must send (`X-API-Key` or `Authorization: Bearer`); None: open.
        max_body_bytes: largest request body accepted (413 above).
        not_ready: returns why no model can answer yet (503), or None when one can.
        served_model: the model answering now; handed to the request in its ASGI state (under
            `state_key`), so the endpoint validates and scores with the model found ready.
        openapi: rewrites the OpenAPI document BentoML serves at `/docs.json`.
        query_parameters: per path, the query parameters it reads and their allowed values
            (400 naming the parameter for another value; other parameters are ignored).

    """

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        not_ready: Callable[[], str | None],
        served_model: Callable[[], object | None] = lambda: None,
        state_key: str = "served_model",
        openapi: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        query_parameters: dict[str, dict[str, Collection[str]]] | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.not_ready = not_ready
        self.served_model = served_model
        self.state_key = state_key
        self.openapi = openapi
        self.query_parameters = query_parameters or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on or answer it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        client = scope.get("client")
        CLIENT.set(f"{client[0]}:{client[1]}" if client else "unknown")
        if path == "/docs.json" and self.openapi is not None:
            await self.app(scope, receive, self._completing_openapi(send))
            return
        headers = dict(scope["headers"])
        if self.api_key and path in PROTECTED_PATHS and not self._authorised(headers):
            await _refuse(
                send,
                401,
                "missing or wrong API key: send it in the X-API-Key header "
                "(or as Authorization: Bearer <key>)",
                [(b"www-authenticate", b'Bearer realm="churn"')],
            )
            return
        if path in MODEL_PATHS:
            reason = self.not_ready()
            if reason:
                await _refuse(send, 503, f"no model to answer with: {reason}")
                return
            scope.setdefault("state", {})[self.state_key] = self.served_model()
        problem = self._query_problem(path, scope.get("query_string", b""))
        if problem:
            await _refuse(send, 400, problem)
            return
        if scope["method"] == "POST" and path in JSON_PATHS:
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if content_type != b"application/json":
                shown = content_type.decode("latin-1") or "none"
                await _refuse(send, 415, f"Content-Type must be application/json, not {shown}")
                return
            length = headers.get(b"content-length")
            if length is not None:
                if not length.isdigit():
                    await _refuse(send, 400, "Content-Length is not a number")
                    return
                if int(length) > self.max_body_bytes:
                    await _refuse(send, 413, self._too_large(int(length)))
                    return
            else:  # chunked: read it here, within the limit, and replay it
                body = await self._read_limited(receive)
                if body is None:
                    await _refuse(send, 413, self._too_large(None))
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _completing_openapi(self, send: Send) -> Send:
        """A `send` that buffers BentoML's OpenAPI document and passes it on completed."""
        assert self.openapi is not None
        complete = self.openapi
        start: Message = {}
        chunks: list[bytes] = []

        async def completed(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                body = json.dumps(complete(json.loads(body))).encode()
            headers = [
                (name, value)
                for name, value in start.get("headers", [])
                if name.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return completed

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        """Either header carries the key (an empty `X-API-Key` does not hide a good token)."""
        assert self.api_key is not None
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        supplied = (
            headers.get(b"x-api-key", b""),
            token.strip() if scheme.lower() == b"bearer" else b"",
        )
        # Both compared, always: the time taken says nothing about which one was close.
        matches = [hmac.compare_digest(key, self.api_key) for key in supplied]
        return any(matches)

    def _query_problem(self, path: str, query: bytes) -> str | None:
        """What is wrong with a query parameter the endpoint knows, or None."""
        allowed = self.query_parameters.get(path)
        if not allowed or not query:
            return None
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name in allowed and value not in allowed[name]:
                choices = " or ".join(sorted(allowed[name]))
                return f"query parameter {name!r} must be {choices}, not {value!r}"
        return None

    def _too_large(self, length: int | None) -> str:
        size = f"{length} bytes" if length is not None else "the body"
        return (
            f"request body too large: {size} over the limit of {self.max_body_bytes} bytes "
            "(CHURN_MAX_BODY_BYTES); split the batch"
        )

    async def _read_limited(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the client's own messages (such as its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
