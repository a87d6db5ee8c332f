"""Run an ASGI emulator on loopback, in a background thread or as the main program."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

# gunicorn's default `--backlog`: how many handshaken connections the kernel keeps waiting for accept().
LISTEN_BACKLOG = 2048


def check_loopback(host: str) -> None:
    """Emulators never listen beyond this machine."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"emulators listen on loopback only, not on {host!r}")


class AcceptGate:
    """At most `limit()` connections accepted at a time, as a gevent worker with `--worker-connections N`.

    Connections beyond the limit are not refused: the kernel completes their handshake and keeps them (with
    whatever bytes they send) in the listen backlog until an accepted connection closes. `limit()` returning
    None accepts everything. Accepted connections stay open between requests for `keep_alive()` idle seconds.
    """

    def __init__(self, limit: Callable[[], int | None], keep_alive: Callable[[], float]):
        self.limit, self.keep_alive = limit, keep_alive
        self._lock = threading.Lock()
        self._slot_freed: asyncio.Event | None = None
        self._listeners: list[socket.socket] = []
        self.open = 0
        self.reset()

    def reset(self) -> None:
        """Restart the counters (connections open now stay counted as open)."""
        with self._lock:
            self.accepted, self.max_open, self.max_backlog = 0, self.open, 0

    def stats(self) -> dict:
        """Connections accepted, open now, the most open at once, and those waiting unaccepted (now, most)."""
        waiting = self.backlog()
        with self._lock:
            self.max_backlog = max(self.max_backlog, waiting)
            return {"connections_accepted": self.accepted, "open_connections": self.open,
                    "max_open_connections": self.max_open, "accept_queue": waiting,
                    "max_accept_queue": self.max_backlog}

    def backlog(self) -> int:
        """Connections handshaken by the kernel but not accepted yet (Linux: tcpi_unacked of a listener)."""
        total = 0
        for listener in list(self._listeners):
            try:
                info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            except OSError:
                continue
            total += struct.unpack_from("I", info, 24)[0]
        return total

    async def serve(self, listener: socket.socket, protocol_factory: Callable[[], asyncio.Protocol], ssl) -> None:
        """Accept from `listener` whenever a slot is free, forever (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        self._slot_freed = asyncio.Event()
        self._listeners.append(listener)
        try:
            while True:
                while not self._has_slot():
                    with self._lock:
                        self.max_backlog = max(self.max_backlog, self.backlog())
                    self._slot_freed.clear()
                    try:  # a config change may raise the limit without any connection closing: look again soon
                        await asyncio.wait_for(self._slot_freed.wait(), 0.05)
                    except TimeoutError:
                        pass
                try:
                    connection, _ = await loop.sock_accept(listener)
                except OSError:  # e.g. out of file descriptors, or a connection reset before accept: go on
                    await asyncio.sleep(0.01)
                    continue
                with self._lock:
                    self.open += 1
                    self.accepted += 1
                    self.max_open = max(self.max_open, self.open)
                loop.create_task(self._start(loop, connection, protocol_factory, ssl))
        finally:
            self._listeners.remove(listener)

    def _has_slot(self) -> bool:
        limit = self.limit()
        with self._lock:
            return limit is None or self.open < limit

    async def _start(self, loop, connection: socket.socket, protocol_factory, ssl) -> None:
        def gated_protocol() -> asyncio.Protocol:
            protocol = protocol_factory()
            lost = protocol.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                try:
                    lost(exc)
                finally:
                    self._release()

            protocol.connection_lost = connection_lost  # type: ignore[method-assign]
            return protocol

        try:
            await loop.connect_accepted_socket(gated_protocol, connection, ssl=ssl)
        except Exception:  # e.g. a failed TLS handshake: the protocol never saw the connection
            connection.close()
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.open -= 1
        if self._slot_freed is not None:
            self._slot_freed.set()


class _GatedListener:
    """What uvicorn.Server keeps in `servers`: close() and wait_closed(), and the bound socket."""

    def __init__(self, sock: socket.socket, task: asyncio.Task):
        self.sockets, self._task = [sock], task

    def close(self) -> None:
        self._task.cancel()
        self.sockets[0].close()

    async def wait_closed(self) -> None:
        try:
            await self._task
        except asyncio.CancelledError:
            pass


class _GatedServer(uvicorn.Server):
    """uvicorn with its own accept loop, so connections beyond the gate's limit stay in the kernel's backlog."""

    def __init__(self, config: uvicorn.Config, gate: AcceptGate):
        super().__init__(config)
        self.gate = gate

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            config.timeout_keep_alive = self.gate.keep_alive()  # read per connection, so it follows the config
            return config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore
                                              app_state=self.lifespan.state)

        host = "127.0.0.1" if config.host == "localhost" else config.host
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, config.port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        task = asyncio.get_running_loop().create_task(self.gate.serve(listener, create_protocol, config.ssl))
        self.servers = [_GatedListener(listener, task)]  # type: ignore[list-item]
        self.started = True


@dataclass
class RunningServer:
    """An emulator listening on `url` until `stop()` is called."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _config(app, host: str, port: int, certfile: str | None = None, keyfile: str | None = None) -> uvicorn.Config:
    check_loopback(host)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        backlog=4096,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )


def _server(app, config: uvicorn.Config) -> uvicorn.Server:
    """A gated server when the app brings an AcceptGate (`app.accept_gate`), else plain uvicorn."""
    gate = getattr(app, "accept_gate", None)
    if gate is None:
        return uvicorn.Server(config)
    config.load()  # uvicorn.Server.serve loads it too; the protocol class and SSL context are needed first
    return _GatedServer(config, gate)


def serve_in_thread(
    app, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0,
    certfile: str | None = None, keyfile: str | None = None,
) -> RunningServer:
    """Start `app` on a free (or given) loopback port in a daemon thread and return once it accepts.

    With `certfile`/`keyfile` it speaks HTTPS (for tests of certificate verification)."""
    server = _server(app, _config(app, host, port, certfile, keyfile))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name="emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"emulator did not start on {host}:{port}")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if certfile else "http"
    return RunningServer(url=f"{scheme}://{host}:{bound_port}", server=server, thread=thread)


def serve_forever(app, host: str, port: int) -> None:
    """Run `app` in the foreground (the `python -m dify_pipeline_dev.emulators` entry point)."""
    _server(app, _config(app, host, port)).run()
