"""Run an ASGI emulator on loopback, in a background thread or as the main program."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass

import uvicorn


def check_loopback(host: str) -> None:
    """Emulators never listen beyond this machine."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"emulators listen on loopback only, not on {host!r}")


@dataclass
class RunningServer:
    """An emulator listening on `url` until `stop()` is called."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "RunningServer":
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


def serve_in_thread(
    app, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0,
    certfile: str | None = None, keyfile: str | None = None,
) -> RunningServer:
    """Start `app` on a free (or given) loopback port in a daemon thread and return once it accepts.

    With `certfile`/`keyfile` it speaks HTTPS (for tests of certificate verification)."""
    server = uvicorn.Server(_config(app, host, port, certfile, keyfile))
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
    """Run `app` in the foreground (the `python -m dify_pipeline.emulators` entry point)."""
    uvicorn.Server(_config(app, host, port)).run()
