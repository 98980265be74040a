"""A standalone server in a background thread, for tests that talk to it over real HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ServiceThread"]


class ServiceThread:
    """The standalone server on a free loopback port, run by its own event loop in a daemon thread.

    Parameters
    ----------
    config : ServiceConfig
        The service's configuration (data folder, limits, executor class...).
    tokens : mapping, optional
        Token -> owner; by default ``tok-alice`` for ``alice`` and ``tok-bob`` for ``bob``.

    The server is started when the object is made; `stop` ends it and the job service.
    """

    TOKENS: Mapping[str, str] = {"tok-alice": "alice", "tok-bob": "bob"}

    def __init__(self, config: Any, tokens: Mapping[str, str] | None = None) -> None:
        from tornado.testing import bind_unused_port

        from ..server import make_app, make_server

        self.settings = config
        self.tokens = dict(tokens or self.TOKENS)
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        sock, self.port = bind_unused_port()
        #: The service root, without a trailing slash.
        self.url = f"http://127.0.0.1:{self.port}{config.root_path}".rstrip("/")

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self.app, self.context = make_app(config, self.tokens)
            self.server = make_server(self.app, config)  # the standalone server's own HTTP layer
            self.server.add_sockets([sock])
            self.context.start()
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="cianna-otf-test-server")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test server did not start")

    def session(self, user: str = "alice") -> Any:
        """A `requests.Session` authenticated as `user` (one of the tokens' owners)."""
        import requests

        token = next(t for t, owner in self.tokens.items() if owner == user)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        return session

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` on the server's event loop (where the service's state lives)."""

        async def wrapper() -> Any:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    def stop(self) -> None:
        """Stop serving, then stop the job service (its workers finish or are cancelled)."""

        def shutdown() -> None:
            self.server.stop()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(30)
        self.context.stop()
