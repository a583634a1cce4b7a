"""One NATS connection per launcher, on an event-loop thread of its own.

NVFlare calls launchers and job handles from many threads of its own, and nats-py
is asyncio: the connection lives on a private loop in a daemon thread, and every
call from NVFlare's side hands a coroutine to that loop and blocks on its result.
The connection reconnects forever; whoever waits on it decides how long to wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import nats
from nats.aio.client import Client

from .protocol import bounded

T = TypeVar("T")

log = logging.getLogger(__name__)


class NatsUnreachable(ConnectionError):
    """No NATS server of the list could be connected to within the connect timeout."""


def redacted(url: str) -> str:
    """`url` without the user and password or token it may carry."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    host = rest.rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}"


@dataclass(frozen=True)
class ConnectOptions:
    """Where the NATS servers are and how to authenticate; the same choices as the worker's."""

    servers: list[str]
    user: Optional[str] = None
    password: Optional[str] = None
    token: Optional[str] = None
    credentials_file: Optional[str] = None
    nkey_seed_file: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    connect_timeout_s: float = 5.0

    @staticmethod
    def parse_servers(nats_url: str | list[str]) -> list[str]:
        """`nats_url` as given in resources.json: one URL, a comma-separated list, or a list."""
        urls = nats_url if isinstance(nats_url, list) else nats_url.split(",")
        servers = [u.strip() for u in urls if u.strip()]
        if not servers:
            raise ValueError("nats_url names no server")
        return servers

    def tls_context(self) -> Optional[ssl.SSLContext]:
        """A TLS context when a CA or a client certificate is given, else None."""
        if not (self.tls_ca or self.tls_cert):
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


class NatsLink:
    """A NATS connection on its own event loop, usable from any thread.

    Connects lazily on first use, so a site starts even while NATS is away.
    `on_reconnect` hooks run on the loop, with the client, after every reconnection.
    """

    def __init__(self, options: ConnectOptions, name: str) -> None:
        self._options = options
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"nats-{name}", daemon=True)
        self._thread.start()
        self._nc: Optional[Client] = None
        self._connecting = threading.Lock()
        self._reconnect_hooks: list[Callable[[Client], Awaitable[None]]] = []

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Runs `coro` on the connection's loop and returns its result; raises
        TimeoutError (and cancels it) after `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def run(self, op: Callable[[Client], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Connects if need be, then runs `op(client)` on the loop (see `call`)."""
        nc = self.client()
        return self.call(op(nc), timeout)

    def on_reconnect(self, hook: Callable[[Client], Awaitable[None]]) -> None:
        self._reconnect_hooks.append(hook)

    def client(self) -> Client:
        """The connected client, connecting first if needed (blocking, up to the connect timeout)."""
        with self._connecting:
            if self._nc is None or self._nc.is_closed:
                try:
                    self._nc = self.call(self._connect(), self._options.connect_timeout_s + 5)
                except Exception as e:
                    servers = ", ".join(redacted(u) for u in self._options.servers)
                    why = bounded(e) if str(e) else "no server answered in time"
                    raise NatsUnreachable(f"cannot connect to NATS at {servers}: {why}") from e
            return self._nc

    async def _connect(self) -> Client:
        o = self._options
        kwargs: dict[str, Any] = dict(
            servers=o.servers,
            name=self._name,
            connect_timeout=o.connect_timeout_s,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            error_cb=self._error,
        )
        if o.user is not None:
            kwargs.update(user=o.user, password=o.password)
        if o.token is not None:
            kwargs["token"] = o.token
        if o.credentials_file:
            kwargs["user_credentials"] = o.credentials_file
        if o.nkey_seed_file:
            kwargs["nkeys_seed"] = o.nkey_seed_file
        tls = o.tls_context()
        if tls is not None:
            kwargs["tls"] = tls
        return await nats.connect(**kwargs)

    async def _disconnected(self) -> None:
        log.warning("flare-launcher: NATS connection lost; reconnecting")

    async def _reconnected(self) -> None:
        log.info("flare-launcher: NATS connection back")
        nc = self._nc
        if nc is None:
            return
        for hook in list(self._reconnect_hooks):
            await hook(nc)

    async def _error(self, e: Exception) -> None:
        # A failed reconnection attempt comes every second while NATS is away: the
        # loss itself was logged once, so these go to the debug level.
        level = logging.DEBUG if isinstance(e, (OSError, asyncio.TimeoutError)) else logging.WARNING
        log.log(level, "flare-launcher: NATS: %s", bounded(e))

    def close(self) -> None:
        """Drains the connection and stops the loop's thread."""
        if self._nc is not None and not self._nc.is_closed:
            try:
                self.call(self._nc.drain(), 10)
            except Exception as e:  # closing is best effort: the process may be exiting
                log.debug("flare-launcher: closing NATS: %s", bounded(e))
        try:
            self.call(_cancel_others(), 5)
        except Exception as e:  # best effort, as above
            log.debug("flare-launcher: ending NATS tasks: %s", bounded(e))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _cancel_others() -> None:
    """Cancels every other task of the loop (a connect still trying) and lets them end."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)
