"""Ways to run the GSLB server: blocking until a signal (`lblab dns serve`, the authority
inside its host), or in a thread of its own (tests, benchmarks).
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gslb.config import GslbConfig
from gslb.control import DEFAULT_CONTROL_PORT
from gslb.globalview import GlobalView
from gslb.server import GslbServer, start_server


def serve(config: GslbConfig, listen: Sequence[tuple[str, int]] = (("127.0.0.1", 5353),),
          control: tuple[str, int] | None = ("127.0.0.1", DEFAULT_CONTROL_PORT),
          **options: Any) -> None:
    """Blocking entry point for ``lblab dns serve``: runs until SIGINT/SIGTERM."""
    async def main() -> None:
        await run_until_signal(await start_server(config, listen, control, **options))

    asyncio.run(main())


async def run_until_signal(server: "GslbServer", background: Sequence[Any] = ()) -> None:
    """Serve until SIGINT/SIGTERM, with optional background coroutines (cancelled at the
    end), then close the server."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(coro) for coro in background]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await server.close()


@dataclass
class ServerThread:
    """A server running in its own thread and loop (tests, bench, experiments' helpers)."""

    server: GslbServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def control(self) -> tuple[str, int] | None:
        return self.server.control

    @property
    def view(self) -> GlobalView:
        return self.server.view

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self.thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.close(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout_s)


def run_server_in_thread(config: GslbConfig, listen: Sequence[tuple[str, int]] = (
                         ("127.0.0.1", 0),), control: tuple[str, int] | None = ("127.0.0.1", 0),
                         ready_timeout_s: float = 10.0, **options: Any) -> ServerThread:
    """Start a server in a daemon thread; returns once bound (raises what binding raised)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["server"] = loop.run_until_complete(
                start_server(config, listen, control, **options))
        except BaseException as exc:  # hand the failure to the caller
            box["error"] = exc
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gslb-server", daemon=True)
    thread.start()
    if not started.wait(ready_timeout_s):
        raise TimeoutError("gslb server did not bind in time")
    if "error" in box:
        thread.join(ready_timeout_s)
        raise box["error"]
    return ServerThread(box["server"], loop, thread)


@contextlib.contextmanager
def running_server(config: GslbConfig, port: int = 0, host: str = "127.0.0.1",
                   control_port: int | None = 0, **options: Any) -> Iterator[ServerThread]:
    """``with running_server(cfg) as s: ... s.port, s.control`` - stopped on exit."""
    control = (host, control_port) if control_port is not None else None
    st = run_server_in_thread(config, [(host, port)], control, **options)
    try:
        yield st
    finally:
        st.stop()
