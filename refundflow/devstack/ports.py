"""Ports for servers the tests start on fixed numbers.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range (32768-60999 on
Linux), the same range every process that binds port 0 or connects out draws from: the
Temporal dev server's internal services among them. A number picked that way and released
may be taken again before our server binds it. Ports drawn below that range and checked free
are not handed out by the kernel, so only another test could take them.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that were free a moment ago, below the
    ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(_LOW, _HIGH)
        if port in ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def free_port() -> int:
    return free_ports(1)[0]
