"""Refusing a request whose body is still unread, so the client sees the refusal.

The handlers stream request bodies (uploads can be large). A refusal raised in ``prepare``
would answer before the body is read; tornado then closes the socket with unread data and the
client usually sees "connection reset" instead of the 401/403 (even for an empty body, the next
request on the same keep-alive connection may hit the closed socket). Small bodies are
therefore read and discarded first; larger or chunked ones are cut off at once.
"""

from __future__ import annotations

from typing import Any

from tornado import web

#: Largest body (bytes) read and discarded before a refusal is sent.
DRAIN_LIMIT = 8 * 1024 * 1024


def refuse_after_body(handler: Any, refusal: web.HTTPError) -> bool:
    """Arrange for `refusal` to be raised once the body is read; False if it must be raised now."""
    if handler.request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    length = handler.request.headers.get("Content-Length", "0").strip()
    chunked = "chunked" in handler.request.headers.get("Transfer-Encoding", "").lower()
    if chunked or not length.isdigit() or int(length) > DRAIN_LIMIT:
        return False
    connection = getattr(handler.request, "connection", None)
    if connection is not None and hasattr(connection, "set_max_body_size"):
        connection.set_max_body_size(DRAIN_LIMIT)

    def discard(chunk: bytes) -> None:
        return None

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise refusal

    # instance attributes shadow the shared handler's body buffering and its HTTP method
    handler.data_received = discard
    setattr(handler, handler.request.method.lower(), refuse)
    return True
