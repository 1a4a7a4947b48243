"""runners/_ports.py: the rendezvous port is free, bindable and below the kernel's ephemeral range."""

from __future__ import annotations

import socket

import pytest

from trainplan.runners import _ports
from trainplan.runners._ports import PORT_LOW, ephemeral_low, free_port


def test_master_port_is_free_and_below_the_ephemeral_range():
    ports = {free_port() for _ in range(20)}
    assert all(20000 <= p < ephemeral_low() for p in ports)
    for port in ports:  # each one can really be bound
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # A range of two ports, one taken by a real listener: only the other can come back.
    monkeypatch.setattr(_ports, "ephemeral_low", lambda: PORT_LOW + 2)
    held = []
    for port in (PORT_LOW, PORT_LOW + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
            break  # the other one stays free (unless another process holds it)
        except OSError:
            sock.close()
    try:
        got = {free_port() for _ in range(10)}
        assert not got & {s.getsockname()[1] for s in held}
    finally:
        for sock in held:
            sock.close()


def test_when_the_range_is_full_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ports, "ephemeral_low", lambda: PORT_LOW + 2)
    monkeypatch.setattr(_ports.random, "randint", lambda lo, hi: port)  # always the held port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        got = free_port()
        assert got != port and got >= ephemeral_low()
