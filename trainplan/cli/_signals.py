"""SIGTERM and SIGHUP end a long command the way Ctrl-C does, so one cleanup path (stop the trial's
whole process group, record it ``terminated``, keep its metrics) serves every way a user or a
scheduler ends ``trainplan run`` or ``trainplan search``."""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["ignore_signals", "interrupt_on_signals"]

_ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class interrupt_on_signals:
    """Within the block, SIGTERM/SIGHUP raise :class:`KeyboardInterrupt` (as SIGINT does);
    ``.signum`` says which signal came, for the shell's exit code 128 + N."""

    signum: int | None = None

    def __enter__(self) -> interrupt_on_signals:
        def interrupt(signum: int, frame: Any) -> None:
            self.signum = signum
            raise KeyboardInterrupt

        self._old = {sig: signal.signal(sig, interrupt) for sig in _ENDING}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def ignore_signals() -> None:
    """A second Ctrl-C or SIGTERM must not cut the cleanup short (it would leave the trial running)."""
    for sig in _ENDING:
        signal.signal(sig, signal.SIG_IGN)
