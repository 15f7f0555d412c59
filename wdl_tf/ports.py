"""Free TCP ports on loopback: the one helper for local clusters, servers and benchmarks."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct free TCP ports on ``host``.

    The sockets are held open together until all are bound, so the ports differ; they are
    closed before returning, so another process may still take one before the caller binds
    it (the usual race of this technique, harmless on a test machine's loopback).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    """One free TCP port on ``host``."""
    return free_ports(1, host)[0]
