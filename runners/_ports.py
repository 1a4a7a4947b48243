"""The rendezvous port of a trial: one that nothing listens on, outside the kernel's ephemeral range."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

PORT_LOW = 20000
"""The lowest port handed out (well above the registered services most machines run)."""


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port() -> int:
    """A TCP port for the rendezvous that nothing listens on now, chosen below the kernel's
    ephemeral range.

    A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, where every outgoing
    connection on the machine (gloo's among them) also takes ports: between our check and the
    rank's bind it can be taken (EADDRINUSE, seen with a trial running beside another). Below the
    range only explicit binds compete.
    """
    high = max(ephemeral_low() - 1, PORT_LOW + 1)
    for _ in range(100):
        port = random.randint(PORT_LOW, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # everything there is busy
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
