"""How `pd-observer serve` stops (docs/configuration.md, "Shutdown and restarts").

Kubernetes sends SIGTERM, waits `terminationGracePeriodSeconds` (30 s by default), then
SIGKILLs. On the first SIGTERM (or SIGINT) uvicorn stops listening and the pipeline begins its
stop (`Pipeline.request_stop`): not ready, new batches 503, accepted ones written until
`server.shutdown_grace_seconds`, the autoscaler's tick finished and its lease released. A second
signal exits at once (status 1); so does a shutdown still running `EXIT_MARGIN_SECONDS` after
the grace (a store write that hangs). A clean stop exits 0 — not by the signal re-raised, as
uvicorn does after handling it (status 143, which reads as a crash).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from observer.config import SHUTDOWN_EXIT_MARGIN_SECONDS as EXIT_MARGIN_SECONDS

log = logging.getLogger("observer.cli")

EXIT_UNCLEAN = 1


class GracefulServer(uvicorn.Server):
    """uvicorn's server with our signal handling: the first signal starts the graceful stop
    (uvicorn's own, plus `on_signal(name)` and a watchdog), a second one exits at once."""

    def __init__(
        self, config: uvicorn.Config, *, grace_seconds: float, on_signal: Callable[[str], None]
    ) -> None:
        super().__init__(config)
        self.grace_seconds = grace_seconds
        self.on_signal = on_signal
        self.signal_name: str | None = None
        self.signaled_at: float | None = None
        self._done = threading.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: it records the signal to raise it again once stopped (the process then
        # dies by it) and ignores a second SIGTERM. Only flag-setting here: logging, the event
        # loop and the pipeline are reached from `on_signal` through call_soon_threadsafe.
        name = signal.Signals(sig).name
        if self.should_exit and self.signal_name is not None:
            _exit_now(f"second signal ({name}) while stopping: exiting at once", name)
        self.signal_name = name
        self.signaled_at = time.monotonic()
        self.should_exit = True
        self.on_signal(name)
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        if not self._done.wait(self.grace_seconds + EXIT_MARGIN_SECONDS):
            _exit_now(
                f"shutdown still running {self.grace_seconds + EXIT_MARGIN_SECONDS:g} s after the "
                "signal: exiting at once",
                self.signal_name,
            )

    def finished(self) -> None:
        """The shutdown is over (stops the watchdog)."""
        self._done.set()


def _exit_now(message: str, signal_name: str | None) -> None:
    log.error(message, extra={"signal": signal_name, "exit_code": EXIT_UNCLEAN})
    logging.shutdown()
    os._exit(EXIT_UNCLEAN)


def serve_until_stopped(server: GracefulServer, sockets: list[object], clean: Callable[[], bool]) -> int:
    """Run `server` until it stops; log how it ended (one line) and return the exit status: 0
    for a clean stop (`clean()`: everything accepted written, every component stopped in
    time), else 1 — then without waiting for threads still stuck (a hung store call)."""
    try:
        server.run(sockets=sockets)  # type: ignore[arg-type]
    finally:
        server.finished()
    code = 0 if clean() else EXIT_UNCLEAN
    extra: dict[str, object] = {"exit_code": code, "signal": server.signal_name}
    if server.signaled_at is not None:
        extra["shutdown_seconds"] = round(time.monotonic() - server.signaled_at, 3)
    (log.info if code == 0 else log.error)("exiting", extra=extra)
    if code != 0:
        logging.shutdown()
        os._exit(code)
    return code
