"""The standalone server (`cianna-otf serve`): the shared handlers on a plain tornado app.

Authentication is by bearer token: one token for a single user, or a tokens file mapping each
token to a user name for a shared GPU node. The owner of a job is the authenticated user.
"""

from __future__ import annotations

import asyncio
import getpass
import hmac
import logging
import secrets
import signal
from pathlib import Path
from typing import Any

from tornado import web

from ._config import ServiceConfig
from ._context import ServiceContext
from ._handlers import FORM_OVERHEAD, TEXT, make_handlers
from ._hub_auth import HubUnavailableError
from ._refusal import DRAIN_LIMIT, HeadCheckingHTTPServer, refuse_after_body

log = logging.getLogger(__name__)


def read_tokens_file(path: str | Path) -> dict[str, str]:
    """Parse ``token user`` lines (``#`` comments allowed) into {token: user}."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}, line {number}: expected 'TOKEN USER'")
        tokens[parts[0]] = parts[1]
    return tokens


class TokenAuthenticator:
    """Maps bearer tokens to user names, comparing in constant time."""

    def __init__(self, tokens: dict[str, str]) -> None:
        if not tokens:
            raise ValueError("at least one token is required")
        self.tokens = dict(tokens)

    def user_for(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value:
            return None
        value = value.strip()
        for token, user in self.tokens.items():
            if hmac.compare_digest(token.encode(), value.encode()):
                return user
        return None


class _AnyMethod(tuple):
    """Lets tornado hand every method to `prepare`, which refuses unknown ones after the body."""

    def __contains__(self, method: object) -> bool:
        return True


class StandaloneHandler(web.RequestHandler):
    """Base of the standalone handlers: token check, owner, plain-text errors.

    Every refusal made before the request is read (unknown method, a path that is not UTF-8,
    no credentials) waits for the end of a small body, so the client's connection stays usable
    (`refuse_after_body`); tornado would otherwise answer early and close it unannounced.
    """

    #: the methods served; tornado's own check is deferred to `prepare`
    SERVED_METHODS = web.RequestHandler.SUPPORTED_METHODS
    SUPPORTED_METHODS = _AnyMethod(web.RequestHandler.SUPPORTED_METHODS)

    def initialize(self, context: ServiceContext, auth: Any) -> None:
        self.context = context
        self.auth = auth
        self._user: str | None = None
        self.admin = False
        self._bad_path = False

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        try:
            return super().decode_argument(value, name)
        except web.HTTPError:
            if name is not None:  # a query or form argument: refused where it is read
                raise
            self._bad_path = True  # a path part: refused in `prepare`, after the body
            return value.decode("utf-8", "replace")

    def _refuse(self, refusal: web.HTTPError) -> None:
        if not refuse_after_body(self, refusal):
            self.set_header("Connection", "close")  # not waited for: say the connection ends
            raise refusal

    def prepare(self) -> None:
        if self.request.method not in self.SERVED_METHODS:
            served = [m for m in self.SERVED_METHODS
                      if getattr(type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())]
            self.set_header("Allow", ", ".join(served))
            self._refuse(web.HTTPError(405, f"method {self.request.method} is not served here"))
            return
        if self._bad_path:
            self._refuse(web.HTTPError(400, "the path is not valid UTF-8 once percent-decoded"))
            return
        try:
            self._user, self.admin = self._principal()
        except HubUnavailableError as exc:
            refusal = web.HTTPError(503, str(exc))
            refusal.retry_after = 10  # type: ignore[attr-defined]  (read by write_error)
            self._refuse(refusal)
            return
        if self._user is None:
            login = self._browser_login()
            if login is not None:  # a person with a browser: the Hub's login page, then back here
                self.redirect(login)
                return
            self.set_header("WWW-Authenticate", 'Bearer realm="cianna-otf"')
            self._refuse(web.HTTPError(401, "authentication required: send 'Authorization: Bearer TOKEN'"))
            return
        self.start_body()  # type: ignore[attr-defined]

    def _principal(self) -> tuple[str | None, bool]:
        """The request's user and whether they administer the service (`HubAuthenticator` knows admins)."""
        for_request = getattr(self.auth, "principal_for_request", None)
        if for_request is not None:
            principal = for_request(self)
            return (principal.name, principal.admin) if principal is not None else (None, False)
        return self.auth.user_for(self.request.headers.get("Authorization")), False

    def _browser_login(self) -> str | None:
        """The login page for a browser's unauthenticated page view, where the users log in elsewhere."""
        login_url = getattr(self.auth, "login_url", None)
        if login_url is None or self.request.method != "GET":
            return None
        if "text/html" not in self.request.headers.get("Accept", ""):
            return None  # an API client (pyvo, curl): a 401 it can act on
        return login_url(self)

    @property
    def owner(self) -> str | None:
        return self._user

    @property
    def admins_only_metrics(self) -> bool:
        """Whether /metrics is for administrators only: on a service with named administrators."""
        return getattr(self.auth, "principal_for", None) is not None

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")


@web.stream_request_body
class _NotFound(web.RequestHandler):
    """The plain-text 404 of every path no route serves, whatever the method and the body.

    It streams: a body sent to a wrong path is never held in memory nor parsed (tornado would
    answer an unparsable one with its HTML page). A small body is read and dropped, so the
    connection stays usable; a large or chunked one is not waited for: the 404 says
    ``Connection: close``.
    """

    MESSAGE = "no such resource; the service root lists the endpoints\n"
    SUPPORTED_METHODS = _AnyMethod(web.RequestHandler.SUPPORTED_METHODS)  # any method: the same 404

    def prepare(self) -> None:
        setattr(self, self.request.method.lower(), self._answer)  # PROPFIND, FOO... too, after the body
        length = self.request.headers.get("Content-Length", "0").strip()
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        if chunked or not length.isdigit() or int(length) > DRAIN_LIMIT:
            self.set_header("Connection", "close")
            self._answer()

    def data_received(self, chunk: bytes) -> None:
        return None  # dropped

    def _answer(self, *args: Any, **kwargs: Any) -> None:
        if self._finished:
            return
        self.set_status(404)
        self.set_header("Content-Type", TEXT)
        self.finish(self.MESSAGE)

    get = head = post = put = delete = patch = options = _answer


def make_app(config: ServiceConfig, tokens: dict[str, str] | None = None,
             auth: Any = None) -> tuple[web.Application, ServiceContext]:
    """Build the tornado application and its (not yet started) service context.

    Users are those of `tokens` ({token: user}), or of `auth`, any object with
    ``user_for(authorization_header) -> user | None`` (`HubAuthenticator`: a JupyterHub's users).
    """
    context = ServiceContext(config)
    auth = auth if auth is not None else TokenAuthenticator(tokens or {})
    handlers: list[Any] = make_handlers(context.root_path, StandaloneHandler, {"context": context, "auth": auth})
    callback = getattr(auth, "callback_route", None)
    route = callback(context.root_path) if callback is not None else None
    if route is not None:  # the end of a browser's login through the Hub
        handlers.insert(0, route)
    # no response compression: pyvo reads job lists from the raw (undecoded) stream; the cookie
    # secret signs browser login cookies (new at each start: browsers then log in again)
    app = web.Application(handlers, default_handler_class=_NotFound, xsrf_cookies=False,
                          cookie_secret=secrets.token_bytes(32))
    return app, context


def default_tokens(token: str | None, tokens_file: str | None) -> tuple[dict[str, str], bool]:
    """Tokens from --token / a tokens file, or a fresh random token (True if generated)."""
    if tokens_file:
        return read_tokens_file(tokens_file), False
    if token:
        return {token: getpass.getuser()}, False
    return {secrets.token_urlsafe(24): getpass.getuser()}, True


def make_server(app: web.Application, config: ServiceConfig) -> HeadCheckingHTTPServer:
    """The HTTP server for `app`: bodies up to the upload limit, and a readable answer (414, 431,
    400) to a request head that tornado alone would drop or refuse without a reason."""
    return HeadCheckingHTTPServer(app, max_body_size=config.max_upload_bytes + FORM_OVERHEAD, xheaders=True)


async def serve(config: ServiceConfig, tokens: dict[str, str] | None, host: str = "127.0.0.1", port: int = 8750,
                auth: Any = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, stop workers and close the database.

    The job database is opened (and checked) before the port is bound: a damaged one raises
    `CorruptDatabaseError` and nothing is served.
    """
    app, context = make_app(config, tokens, auth)
    server = make_server(app, config)
    server.listen(port, host)
    context.start()
    log.info("CIANNA On-The-Fly serving at http://%s:%d%s", host, port, context.root_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    await stop.wait()
    log.info("stopping: no new requests; running jobs will be requeued at the next start")
    server.stop()
    await asyncio.to_thread(context.stop)
    log.info("stopped")
