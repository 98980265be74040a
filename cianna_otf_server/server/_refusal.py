"""Refusing a request whose body is still unread, so the client sees the refusal.

The handlers stream request bodies (uploads can be large). A refusal raised in ``prepare``
would answer before the body is read; tornado then closes the socket with unread data and the
client usually sees "connection reset" instead of the 401/403 (even for an empty body, the next
request on the same keep-alive connection may hit the closed socket). Small bodies are
therefore read and discarded first; larger or chunked ones are cut off at once.

The same holds one level down, for requests no handler ever sees: `HeadCheckingHTTPServer`
answers an over-long request line (414), over-large headers (431) and a body framing tornado
does not support (400) with a status and a sentence, where tornado alone closes the
connection or sends a bare 400.
"""

from __future__ import annotations

import logging
import re
import socket
from datetime import timedelta
from typing import Any

from tornado import gen, httputil, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

log = logging.getLogger(__name__)

#: Largest body (bytes) read and discarded before a refusal is sent.
DRAIN_LIMIT = 8 * 1024 * 1024


def refuse_after_body(handler: Any, refusal: web.HTTPError) -> bool:
    """Arrange for `refusal` to be raised once the body is read; False if it must be raised now.

    A streaming handler that answers before its request is read makes tornado close the
    connection, unannounced: the client's next request on it meets a reset. Raised from the
    method instead, after the (dropped) body, the answer leaves the connection usable; a GET's
    empty body is read at once.
    """
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


#: Longest request line (method, target and version) served; a longer one is answered 414.
MAX_REQUEST_LINE = 64 * 1024
#: Largest header block (names and values) served; a larger one is answered 431.
MAX_HEADER_BYTES = 64 * 1024
#: How much of a request's head tornado reads before it gives up by closing the connection:
#: heads between the limits above and this one get their 414 or 431; longer ones no answer.
HEAD_READ_LIMIT = 1024 * 1024
#: Seconds a refused client may pause in sending a body it was not asked for before the close.
LINGER_SECONDS = 2.0

_DIGITS = re.compile(r"[0-9]+")


def head_refusal(start_line: httputil.RequestStartLine,
                 headers: httputil.HTTPHeaders) -> tuple[int, str, str] | None:
    """(status, reason, message) refusing a request by its head alone, or None to serve it.

    The framing rules are tornado's own (which would answer them with a bare 400 after the
    handler has started): one Content-Length, a number; Transfer-Encoding only ``chunked``.
    """
    line = len(start_line.method) + len(start_line.path) + len(start_line.version) + 2
    if line > MAX_REQUEST_LINE:
        return (414, "URI Too Long", f"the request line is {line} bytes; the service reads at most "
                f"{MAX_REQUEST_LINE} (send long parameter values in a POST body)")
    size = sum(len(name) + len(value) + 4 for name, value in headers.get_all())
    if size > MAX_HEADER_BYTES:
        return (431, "Request Header Fields Too Large",
                f"the request headers are {size} bytes; the service reads at most {MAX_HEADER_BYTES}")
    encoding = headers.get("Transfer-Encoding")
    length = headers.get("Content-Length")
    if encoding is not None:
        if length is not None:
            return (400, "Bad Request", "a request carries Content-Length or Transfer-Encoding, not both")
        if encoding.strip().lower() != "chunked":
            return (400, "Bad Request", f"Transfer-Encoding {encoding[:80]!r} is not supported; send the "
                    "body with Content-Length, or with Transfer-Encoding: chunked")
    elif length is not None:
        values = {piece.strip() for piece in length.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            return (400, "Bad Request", f"Content-Length {length[:80]!r} is not one number of bytes")
    return None


class _HeadCheck(httputil.HTTPMessageDelegate):
    """Passes a request on to `delegate`, or answers it itself when `head_refusal` refuses it.

    A refused request with no body, or a short one of known length, is read to its end before
    the answer, so the connection stays usable. Any other body cannot (or should not) be read:
    the connection is taken from tornado, answered, and closed gently (`_answer_and_linger`).
    """

    def __init__(self, delegate: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection,
                 client: str) -> None:
        self._delegate, self._connection, self._client = delegate, connection, client
        self._refusal: tuple[int, str, str] | None = None
        self._answered = False
        self._head = False

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        self._refusal = head_refusal(start_line, headers)
        self._head = start_line.method == "HEAD"
        if self._refusal is None:
            return self._delegate.headers_received(start_line, headers)
        log.info("refused a request from %s: %s", self._client, self._refusal[2])
        length = headers.get("Content-Length", "0")
        detach = getattr(self._connection, "detach", None)
        if detach is not None and ("Transfer-Encoding" in headers or not length.isdigit()
                                   or int(length) > DRAIN_LIMIT):
            self._answered = True
            IOLoop.current().spawn_callback(_answer_and_linger, detach(), self._response())
        return None  # otherwise answered in finish(), once the short body has been read

    def data_received(self, chunk: bytes) -> Any:
        if self._refusal is None:
            return self._delegate.data_received(chunk)
        return None

    def finish(self) -> None:
        if self._refusal is None:
            self._delegate.finish()
        elif not self._answered:
            self._answered = True
            status, reason, _ = self._refusal
            head, body = self._response_parts()
            self._connection.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, reason), head, body)
            self._connection.finish()

    def on_connection_close(self) -> None:
        if self._refusal is None:
            self._delegate.on_connection_close()

    def _response_parts(self, close: bool = False) -> tuple[httputil.HTTPHeaders, bytes | None]:
        assert self._refusal is not None
        body = f"{self._refusal[2]}\n".encode()
        headers = httputil.HTTPHeaders({"Content-Type": "text/plain; charset=UTF-8",
                                        "Content-Length": str(len(body)), "Cache-Control": "no-store"})
        if close:
            headers["Connection"] = "close"
        return headers, None if self._head else body

    def _response(self) -> bytes:
        """The whole answer as bytes, for a connection taken from tornado."""
        assert self._refusal is not None
        status, reason, _ = self._refusal
        headers, body = self._response_parts(close=True)
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in headers.get_all()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _answer_and_linger(stream: IOStream, response: bytes) -> None:
    """Send `response`, then read and drop what the client still sends before closing.

    Closing a socket with unread data makes the kernel reset the connection, and a reset can
    destroy the answer before the client reads it; so the body is drained (at most
    `DRAIN_LIMIT` bytes, and for as long as it keeps coming within `LINGER_SECONDS`).
    """
    try:
        await stream.write(response)
        try:
            stream.socket.shutdown(socket.SHUT_WR)  # the answer is complete: say so
        except OSError:
            pass
        drained = 0
        while drained < DRAIN_LIMIT:
            chunk = await gen.with_timeout(timedelta(seconds=LINGER_SECONDS),
                                           stream.read_bytes(64 * 1024, partial=True),
                                           quiet_exceptions=(StreamClosedError,))
            drained += len(chunk)
    except (StreamClosedError, gen.TimeoutError):
        pass
    finally:
        stream.close()


class HeadCheckingHTTPServer(HTTPServer):
    """tornado's `HTTPServer`, answering the requests whose head tornado would drop without a word.

    By default tornado reads at most 64 KiB of a request's head and, beyond that, closes the
    connection (the client sees a reset, not an error it can report). This server lets tornado
    read up to `HEAD_READ_LIMIT` (its ``max_header_size``) and answers, through the public
    `start_request` hook, a request line over `MAX_REQUEST_LINE` with 414, headers over
    `MAX_HEADER_BYTES` with 431, and an unsupported Transfer-Encoding or a malformed
    Content-Length with 400, each with a one-line plain-text reason.
    """

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("max_header_size") is None:
            kwargs["max_header_size"] = HEAD_READ_LIMIT
        super().initialize(*args, **kwargs)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        context = getattr(request_conn, "context", None)
        return _HeadCheck(delegate, request_conn, str(getattr(context, "remote_ip", None) or "a client"))
