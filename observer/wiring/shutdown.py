"""How `pd-observer serve` stops (docs/configuration.md, "Shutdown and restarts").

Kubernetes sends SIGTERM, waits `terminationGracePeriodSeconds` (30 s by default), then
SIGKILLs. On the first SIGTERM (or SIGINT) uvicorn stops listening and the pipeline begins its
stop (`Pipeline.request_stop`): not ready, new batches 503, accepted ones written until
`server.shutdown_grace_seconds`, the autoscaler's tick finished and its lease released. A second
signal exits without waiting for the stop (status 1), the autoscaler's lease released first for
`EXIT_MARGIN_SECONDS` at most (`on_forced_exit`); a shutdown still running `EXIT_MARGIN_SECONDS`
after the grace (a store write that hangs) exits at once, status 1 (the lease was released at
the grace). A clean stop exits 0 — not by the signal re-raised, as uvicorn does after handling
it (status 143, which reads as a crash).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import uvicorn

from observer.config import SHUTDOWN_EXIT_MARGIN_SECONDS as EXIT_MARGIN_SECONDS

log = logging.getLogger("observer.cli")

EXIT_UNCLEAN = 1


class GracefulServer(uvicorn.Server):
    """uvicorn's server with our signal handling: the first signal starts the graceful stop
    (uvicorn's own, plus `on_signal(name)` and a watchdog), a second one exits once
    `on_forced_exit()` (the autoscaler's lease released) has run, for `EXIT_MARGIN_SECONDS` at
    most; a third one exits at once."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        grace_seconds: float,
        on_signal: Callable[[str], None],
        on_forced_exit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.grace_seconds = grace_seconds
        self.on_signal = on_signal
        self.on_forced_exit = on_forced_exit
        self.forcing = False
        self.signal_name: str | None = None
        self.signaled_at: float | None = None
        self._done = threading.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: it records the signal to raise it again once stopped (the process then
        # dies by it) and ignores a second SIGTERM. Only flag-setting here: logging, the event
        # loop and the pipeline are reached from `on_signal` through call_soon_threadsafe. (A
        # forced exit waits here, `EXIT_MARGIN_SECONDS` at most, for its work in a thread.)
        name = signal.Signals(sig).name
        if self.should_exit and self.signal_name is not None:
            if self.forcing:  # a third signal, while `on_forced_exit` runs
                _exit_now(f"third signal ({name}) while stopping: exiting at once", name)
            self.forcing = True
            if self.on_forced_exit is None:
                _exit_now(f"second signal ({name}) while stopping: exiting at once", name)
            _exit_now(
                f"second signal ({name}) while stopping: releasing the autoscaler's lease, then exiting",
                name,
                last=self.on_forced_exit,
            )
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


def _exit_now(message: str, signal_name: str | None, last: Callable[[], None] | None = None) -> NoReturn:
    """Log `message` and exit 1 without waiting for anything, but `last()` (in a thread of its
    own: from a signal handler, with the event loop and any lock possibly held by this thread)
    for `EXIT_MARGIN_SECONDS` at most."""
    log.error(message, extra={"signal": signal_name, "exit_code": EXIT_UNCLEAN})
    if last is not None:
        worker = threading.Thread(target=last, name="exit-last", daemon=True)
        worker.start()
        worker.join(EXIT_MARGIN_SECONDS)
        if worker.is_alive():
            log.error(
                "not done within the exit margin: exiting without it",
                extra={"signal": signal_name, "margin_seconds": EXIT_MARGIN_SECONDS},
            )
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
