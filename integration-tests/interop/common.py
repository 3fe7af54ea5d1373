"""What the aioquic interop clients share: their failure type, HOST:PORT parsing, an
H3 connection that announces HTTP Datagrams, and waiting for a condition on a
connection's events."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Callable

from aioquic.h3.connection import H3Connection, Setting


class Failure(Exception):
    """A connection, handshake or protocol failure (or the script's own): exit 1."""


def host_port(value: str) -> tuple[str, int]:
    """HOST:PORT, with IPv6 literals as [ADDR]:PORT."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", value) or re.fullmatch(r"([^:\[\]]+):(\d+)", value)
    if m is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (write IPv6 as [ADDR]:PORT)")
    port = int(m.group(2))
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range in {value!r}")
    return m.group(1), port


class H3DatagramConnection(H3Connection):
    """Announces SETTINGS_H3_DATAGRAM=1 (RFC 9297 §2.1.1) whenever the QUIC layer accepts
    DATAGRAM frames, without WebTransport."""

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        if self._quic.configuration.max_datagram_frame_size is not None:
            settings[Setting.H3_DATAGRAM] = 1
        return settings


async def wait_for(changed: asyncio.Event, check_alive: Callable[[], None], predicate: Callable[[], object],
                   timeout: float, what: str, poll: float | None = None) -> None:
    """Waits until `predicate()` holds, woken by `changed` (and every `poll` seconds, for
    closes aioquic decides on without an event); `check_alive` raises on a closed
    connection. A timeout raises Failure naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Failure(f"timed out after {timeout:g}s waiting for {what}")
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), min(remaining, poll) if poll else remaining)
        except asyncio.TimeoutError:
            pass
