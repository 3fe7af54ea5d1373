#!/usr/bin/env python3
"""HTTP/3 and QUIC attacks against a proxy, built on aioquic, for hardening tests.

Every subcommand talks to 127.0.0.1 only and prints exactly one JSON line on stdout
(progress goes to stderr); `connect-flood` also prints a `{"event": "settled", ...}`
line first and then waits for stdin to close. Exit 0 when the run completed (whatever
the proxy answered), 1 on a failure of the script's own (no handshake, ...).

  oversize        requests whose header section exceeds the server's
                  SETTINGS_MAX_FIELD_SECTION_SIZE, many on one connection; then a
                  normal GET on the same connection
  encoder-flood   QPACK encoder-stream instructions (Set Dynamic Table Capacity and
                  Insert With Literal Name) beyond any table the server allowed; how
                  much the server took (flow control); a GET; then a request whose
                  field section references the dynamic table
  open-headers    HEADERS frames that declare a huge length and never end: how much
                  of them the server reads (stream flow-control credit it grants)
  connect-flood   many extended CONNECT (connect-udp) requests on one connection,
                  never closed: how many the server answers while they are held
  amplification   one client Initial from a raw UDP socket that never answers: the
                  bytes the server sends back (RFC 9000 §8.1 allows 3x)
  handshakes      Initials from many raw UDP sockets that never complete: which
                  sockets were answered with a Retry, which with a handshake
  late-request    a GET, and once its response has ended another on the same
                  connection at once (aioquic's client ignores GOAWAY, so it sends it
                  even when the server is draining): both statuses
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import socket
import sys
import threading
import time
from collections import Counter

try:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.buffer import encode_uint_var
    from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, encode_frame
    from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import (
        ConnectionTerminated,
        HandshakeCompleted,
        ProtocolNegotiated,
        QuicEvent,
        StopSendingReceived,
        StreamReset,
    )
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"h3_attacks: aioquic is not installed ({exc}); pip install -r requirements.txt", file=sys.stderr)
    sys.exit(1)

from common import Failure, H3DatagramConnection

HOST = "127.0.0.1"
SERVER_NAME = "localhost"


def log(msg: str) -> None:
    print(f"h3_attacks: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# an HTTP/3 client that records every stream's fate


class StreamFate:
    def __init__(self) -> None:
        self.status: int | None = None
        self.ended = False
        self.reset: int | None = None
        self.stop_sending: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http: H3Connection | None = None
        self.handshake_done = False
        self.terminated: ConnectionTerminated | None = None
        self.streams: dict[int, StreamFate] = {}
        self.changed = asyncio.Event()

    def fate(self, stream_id: int) -> StreamFate:
        return self.streams.setdefault(stream_id, StreamFate())

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_done = True
        elif isinstance(event, ProtocolNegotiated):
            if self.http is None and event.alpn_protocol == "h3":
                self.http = H3DatagramConnection(self._quic, enable_webtransport=False)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, StreamReset):
            self.fate(event.stream_id).reset = event.error_code
        elif isinstance(event, StopSendingReceived):
            self.fate(event.stream_id).stop_sending = event.error_code
        if self.http is not None:
            try:
                for h3_event in self.http.handle_event(event):
                    self.h3_event_received(h3_event)
            except Exception as exc:  # the server's answer to an attack may be odd
                log(f"h3 layer: {exc!r}")
        self.changed.set()

    def h3_event_received(self, event: H3Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        if stream_id is None:
            return
        fate = self.fate(stream_id)
        if isinstance(event, HeadersReceived):
            status = dict(event.headers).get(b":status")
            if fate.status is None and status and not status.startswith(b"1"):
                fate.status = int(status)
            if event.stream_ended:
                fate.ended = True
        elif isinstance(event, DataReceived) and event.stream_ended:
            fate.ended = True

    def terminated_json(self) -> dict | None:
        t = self.terminated
        if t is None:
            return None
        return {"error_code": t.error_code, "reason": t.reason_phrase}

    async def wait_for(self, predicate, timeout: float) -> bool:
        """Waits until predicate() holds or the connection ends; False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.terminated is not None:
                return predicate()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))
            except asyncio.TimeoutError:
                pass
        return True

    def send_request(self, path: str, extra: list[tuple[bytes, bytes]] = (), method: bytes = b"GET", end_stream: bool = True) -> int:
        assert self.http is not None
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", f"{SERVER_NAME}:{self._port}".encode()),
            (b":path", path.encode()),
            *extra,
        ]
        self.fate(stream_id)
        self.http.send_headers(stream_id, headers, end_stream=end_stream)
        self.transmit()
        return stream_id

    async def get(self, path: str, timeout: float) -> int | None:
        """A normal GET on this connection: its status, or None."""
        if self.terminated is not None:
            return None
        stream_id = self.send_request(path)
        await self.wait_for(lambda: self.fate(stream_id).ended or self.fate(stream_id).reset is not None, timeout)
        return self.fate(stream_id).status


async def open_client(port: int, ca: str, timeout: float, datagrams: bool = False):
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        server_name=SERVER_NAME,
        max_datagram_frame_size=65536 if datagrams else None,
    )
    configuration.load_verify_locations(ca)
    cm = connect(HOST, port, configuration=configuration, create_protocol=Client, wait_connected=False)
    client: Client = await cm.__aenter__()
    client._port = port
    client.transmit()
    if not await client.wait_for(lambda: client.handshake_done and client.http is not None, timeout):
        await cm.__aexit__(None, None, None)
        raise Failure(f"no HTTP/3 handshake within {timeout}s: {client.terminated_json()}")
    # The server's SETTINGS (its QPACK table capacity, field section size).
    await client.wait_for(lambda: client.http.received_settings is not None, timeout)
    return client, cm


async def close_client(client: Client, cm) -> None:
    if client.terminated is None:
        client.close(error_code=ErrorCode.H3_NO_ERROR)
    await cm.__aexit__(None, None, None)


def settings_json(client: Client) -> dict:
    settings = client.http.received_settings or {}
    return {str(k): v for k, v in settings.items()}


async def drain_sends(client: Client, stream_ids: list[int], timeout: float) -> None:
    """Waits until QUIC has sent what was queued on `stream_ids` (or flow control holds
    it, or the connection ended, or `timeout`)."""
    quic = client._quic

    def flushed() -> bool:
        for sid in stream_ids:
            stream = quic._streams.get(sid)
            if stream is None:
                continue
            sender = stream.sender
            if sender.highest_offset < min(sender._buffer_stop, stream.max_stream_data_remote):
                return False
        return True

    deadline = time.monotonic() + timeout
    while not flushed() and client.terminated is None and time.monotonic() < deadline:
        client.transmit()
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------
# oversize: header sections over SETTINGS_MAX_FIELD_SECTION_SIZE


async def oversize(args) -> dict:
    client, cm = await open_client(args.port, args.ca, args.timeout)
    try:
        settings = settings_json(client)
        filler = [(f"x-filler-{i}".encode(), b"f" * args.size) for i in range(args.headers)]
        section = sum(len(n) + len(v) + 32 for n, v in filler)
        log(f"{args.requests} requests with {args.headers} headers of {args.size} bytes "
            f"(field section ~{section} bytes; server SETTINGS {settings})")
        stream_ids: list[int] = []
        for i in range(args.requests):
            if client.terminated is not None:
                break
            # At most max_concurrent_streams at once: aioquic holds the rest back.
            stream_ids.append(client.send_request(f"/oversize/{i}", filler))
            if len(stream_ids) % 10 == 0:
                await drain_sends(client, stream_ids[-10:], args.timeout)
        await client.wait_for(lambda: all(client.fate(s).done for s in stream_ids), args.timeout)
        fates = [client.fate(s) for s in stream_ids]
        after = await client.get("/after-oversize", args.timeout)
        return {
            "server_settings": settings,
            "field_section_bytes": section,
            "requests": len(stream_ids),
            "statuses": dict(Counter(str(f.status) for f in fates)),
            "resets": dict(Counter(str(f.reset) for f in fates if f.reset is not None)),
            "unanswered": sum(1 for f in fates if f.status is None and f.reset is None),
            "terminated": client.terminated_json(),
            "after_same_connection": after,
        }
    finally:
        await close_client(client, cm)


# --------------------------------------------------------------------------
# encoder-flood: QPACK encoder stream instructions (RFC 9204 §4.3)


def qpack_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 §5.1, used by QPACK)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value % 128) + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def insert_with_literal_name(name: bytes, value: bytes) -> bytes:
    # 01 H=0 name-length (5-bit prefix), name, H=0 value-length (7-bit prefix), value
    return qpack_int(len(name), 5, 0x40) + name + qpack_int(len(value), 7, 0x00) + value


async def encoder_flood(args) -> dict:
    client, cm = await open_client(args.port, args.ca, args.timeout)
    try:
        quic = client._quic
        http = client.http
        settings = settings_json(client)
        encoder_stream = http._local_encoder_stream_id
        # Set Dynamic Table Capacity (001, 5-bit prefix) to 64 KiB, then inserts of
        # ~100 bytes each: a server that applied them would hold one entry each.
        instructions = bytearray(qpack_int(65536, 5, 0x20))
        n = 0
        while len(instructions) < args.bytes:
            instructions += insert_with_literal_name(f"x-insert-{n}".encode(), b"v" * 90)
            n += 1
        log(f"{len(instructions)} bytes of encoder instructions ({n} inserts); server SETTINGS {settings}")
        for at in range(0, len(instructions), 65536):
            quic.send_stream_data(encoder_stream, bytes(instructions[at:at + 65536]))
            await drain_sends(client, [encoder_stream], 2.0)
            if client.terminated is not None:
                break
        # Let the server read what it wants to; then see what it took.
        await drain_sends(client, [encoder_stream], args.timeout)
        stream = quic._streams[encoder_stream]
        # A GET that uses only the static table and literals still works.
        after = await client.get("/after-encoder-flood", args.timeout)
        # A field section that references dynamic-table entry 0 (Required Insert Count
        # 1; the server's table capacity is what it announced).
        dynamic_ref = None
        if client.terminated is None and args.reference:
            stream_id = quic.get_next_available_stream_id()
            # Encoded Required Insert Count 2 (= 1 for a 64 KiB table; any value > 0
            # refers to the dynamic table), Delta Base 0, then Indexed Field Line with
            # relative index 0 (1T=0 dynamic): 0x80.
            block = bytes([0x02, 0x00, 0x80])
            quic.send_stream_data(stream_id, encode_frame(FrameType.HEADERS, block), end_stream=True)
            client.fate(stream_id)
            client.transmit()
            await client.wait_for(lambda: client.fate(stream_id).done or client.terminated is not None, args.timeout)
            f = client.fate(stream_id)
            # A connection error comes as CONNECTION_CLOSE: give it a moment.
            await client.wait_for(lambda: client.terminated is not None, 1.0)
            dynamic_ref = {"status": f.status, "ended": f.ended, "reset": f.reset, "stop_sending": f.stop_sending, "terminated": client.terminated_json()}
        return {
            "server_settings": settings,
            "instruction_bytes": len(instructions),
            "inserts": n,
            "credit_granted": stream.max_stream_data_remote,
            "bytes_sent": stream.sender.highest_offset,
            "stop_sending": client.fate(encoder_stream).stop_sending,
            "after_same_connection": after,
            "dynamic_reference": dynamic_ref,
            "terminated": client.terminated_json(),
        }
    finally:
        await close_client(client, cm)


# --------------------------------------------------------------------------
# open-headers: HEADERS frames that declare a huge length and never end


async def open_headers(args) -> dict:
    client, cm = await open_client(args.port, args.ca, args.timeout)
    try:
        quic = client._quic
        stream_ids = []
        header = encode_uint_var(FrameType.HEADERS) + encode_uint_var(1 << 30)
        chunk = bytes(65536)
        for _ in range(args.streams):
            stream_id = quic.get_next_available_stream_id()
            client.fate(stream_id)
            quic.send_stream_data(stream_id, header)
            stream_ids.append(stream_id)
        # Fill each stream as far as the server's flow control lets us, up to --bytes.
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and client.terminated is None:
            progressed = False
            for sid in stream_ids:
                stream = quic._streams.get(sid)
                fate = client.fate(sid)
                if stream is None or fate.reset is not None or fate.stop_sending is not None:
                    continue
                queued = stream.sender._buffer_stop
                if queued < args.bytes and queued < stream.max_stream_data_remote + len(chunk):
                    quic.send_stream_data(sid, chunk)
                    progressed = True
            client.transmit()
            await asyncio.sleep(0.002)
            if not progressed:
                # Everything queued up to the credit: wait for more credit or the end.
                before = sum(quic._streams[s].max_stream_data_remote for s in stream_ids if s in quic._streams)
                await client.wait_for(
                    lambda: sum(quic._streams[s].max_stream_data_remote for s in stream_ids if s in quic._streams) > before,
                    args.settle,
                )
                after = sum(quic._streams[s].max_stream_data_remote for s in stream_ids if s in quic._streams)
                if after == before:
                    break
        streams = []
        for sid in stream_ids:
            stream = quic._streams.get(sid)
            fate = client.fate(sid)
            streams.append({
                "credit": stream.max_stream_data_remote if stream else None,
                "sent": stream.sender.highest_offset if stream else None,
                "reset": fate.reset,
                "stop_sending": fate.stop_sending,
                "status": fate.status,
            })
        return {
            "streams": streams,
            "total_sent": sum(s["sent"] or 0 for s in streams),
            "terminated": client.terminated_json(),
        }
    finally:
        await close_client(client, cm)


# --------------------------------------------------------------------------
# connect-flood: many CONNECT-UDP requests held open on one connection


async def connect_flood(args) -> dict:
    client, cm = await open_client(args.port, args.ca, args.timeout, datagrams=True)
    try:
        stream_ids = []
        extra = [(b":protocol", b"connect-udp"), (b"capsule-protocol", b"?1")]
        path = f"/.well-known/masque/udp/{args.target_host}/{args.target_port}/"
        for _ in range(args.streams):
            stream_ids.append(client.send_request(path, extra, method=b"CONNECT", end_stream=False))
        # Settled: nothing new answered for --settle seconds (the server holds back
        # stream credit beyond its limit, so the rest wait), or all answered.
        answered = lambda: sum(1 for s in stream_ids if client.fate(s).status is not None or client.fate(s).reset is not None)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and client.terminated is None and answered() < len(stream_ids):
            before = answered()
            await client.wait_for(lambda: answered() > before, args.settle)
            if answered() == before:
                break
        fates = [client.fate(s) for s in stream_ids]
        settled = {
            "event": "settled",
            "requested": len(stream_ids),
            "statuses": dict(Counter(str(f.status) for f in fates if f.status is not None)),
            "resets": dict(Counter(str(f.reset) for f in fates if f.reset is not None)),
            "waiting": sum(1 for f in fates if f.status is None and f.reset is None),
            "peer_max_streams_bidi": client._quic._remote_max_streams_bidi,
            "terminated": client.terminated_json(),
        }
        print(json.dumps(settled), flush=True)
        # Hold every stream open until stdin closes (the test reads the metrics), read
        # by a daemon thread so that a timeout here never waits for it.
        loop = asyncio.get_running_loop()
        stdin_closed = asyncio.Event()

        def read_stdin() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stdin_closed.set)

        threading.Thread(target=read_stdin, daemon=True).start()
        try:
            await asyncio.wait_for(stdin_closed.wait(), args.timeout)
        except asyncio.TimeoutError:
            log("stdin never closed; closing anyway")
        return {"event": "closed", "terminated": client.terminated_json()}
    finally:
        await close_client(client, cm)


# --------------------------------------------------------------------------
# raw sockets: a client Initial that is never followed up


def client_initial(port: int) -> tuple[QuicConnection, list[bytes]]:
    """A fresh client connection's first flight (its Initial, padded to 1200 bytes)."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=SERVER_NAME)
    connection = QuicConnection(configuration=configuration)
    now = time.monotonic()
    connection.connect((HOST, port), now=now)
    return connection, [data for data, _ in connection.datagrams_to_send(now=now)]


def packet_kind(datagram: bytes) -> str:
    first = datagram[0]
    if not first & 0x80:
        return "short"
    version = int.from_bytes(datagram[1:5], "big")
    if version == 0:
        return "version_negotiation"
    return {0: "initial", 1: "0rtt", 2: "handshake", 3: "retry"}[(first & 0x30) >> 4]


def receive_all(sockets: list[socket.socket], seconds: float, on_datagram=None) -> list[list[bytes]]:
    """Everything each socket receives within `seconds`; `on_datagram(i, data)` sees each
    datagram as it comes."""
    got: list[list[bytes]] = [[] for _ in sockets]
    index = {s.fileno(): i for i, s in enumerate(sockets)}
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return got
        readable, _, _ = select.select(sockets, [], [], remaining)
        for s in readable:
            try:
                data = s.recv(65535)
            except OSError:
                continue
            i = index[s.fileno()]
            got[i].append(data)
            if on_datagram is not None:
                on_datagram(i, data)


def raw_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


def amplification(args) -> dict:
    sock = raw_socket()
    try:
        _, datagrams = client_initial(args.port)
        sent = 0
        for d in datagrams:
            sock.sendto(d, (HOST, args.port))
            sent += len(d)
        received = receive_all([sock], args.listen)[0]
        total = sum(len(d) for d in received)
        return {
            "sent": sent,
            "sent_datagrams": len(datagrams),
            "received": total,
            "received_datagrams": [len(d) for d in received],
            "kinds": [packet_kind(d) for d in received],
            "ratio": total / sent if sent else None,
        }
    finally:
        sock.close()


def handshakes(args) -> dict:
    """Initials from `--count` sockets. With --answer-retry, a socket that gets a Retry
    sends the Initial again with the token (as a client at a real address would), and
    then never answers either."""
    sockets = [raw_socket() for _ in range(args.count)]
    connections: list[QuicConnection] = []
    retried = [False] * len(sockets)
    try:
        sent = []
        for s in sockets:
            connection, datagrams = client_initial(args.port)
            connections.append(connection)
            for d in datagrams:
                s.sendto(d, (HOST, args.port))
            sent.append(sum(len(d) for d in datagrams))

        def on_datagram(i: int, data: bytes) -> None:
            if not args.answer_retry or retried[i] or packet_kind(data) != "retry":
                return
            retried[i] = True
            now = time.monotonic()
            connections[i].receive_datagram(data, (HOST, args.port), now=now)
            for d, _ in connections[i].datagrams_to_send(now=now):
                sockets[i].sendto(d, (HOST, args.port))
                sent[i] += len(d)

        received = receive_all(sockets, args.listen, on_datagram)
        per_socket = []
        for i, datagrams in enumerate(received):
            kinds = [packet_kind(d) for d in datagrams]
            # After a Retry: what answered the Initial with the token.
            after_retry = kinds[kinds.index("retry") + 1:] if "retry" in kinds else []
            per_socket.append({
                "first": kinds[0] if kinds else "none",
                "after_retry": after_retry[0] if after_retry else ("none" if "retry" in kinds else None),
                "datagrams": len(datagrams),
                "bytes": sum(len(d) for d in datagrams),
                "sent": sent[i],
                "kinds": kinds,
            })
        retry_sizes = [len(d) for datagrams in received for d in datagrams if packet_kind(d) == "retry"]
        return {
            "sockets": len(sockets),
            "first": dict(Counter(p["first"] for p in per_socket)),
            "after_retry": dict(Counter(p["after_retry"] for p in per_socket if p["after_retry"] is not None)),
            "retry_sizes": sorted(set(retry_sizes)),
            "max_ratio": max(p["bytes"] / p["sent"] for p in per_socket),
            "per_socket": per_socket,
        }
    finally:
        for s in sockets:
            s.close()


# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# late-request: a request right after the one before it ended


async def late_request(args) -> dict:
    client, cm = await open_client(args.port, args.ca, args.timeout)
    first = client.send_request(args.first)
    await client.wait_for(lambda: client.fate(first).done, args.timeout)
    second = None if client.terminated is not None else client.send_request(args.second)
    if second is not None:
        await client.wait_for(lambda: client.fate(second).done, args.timeout)
    result = {
        "first": client.fate(first).status,
        "second": client.fate(second).status if second is not None else None,
        "second_reset": client.fate(second).reset if second is not None else None,
        "terminated": client.terminated_json(),
    }
    await close_client(client, cm)
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(q, tls=True):
        q.add_argument("--port", type=int, required=True, help="the server's UDP port on 127.0.0.1")
        if tls:
            q.add_argument("--ca", required=True, help="PEM CA that verifies the server")
            q.add_argument("--timeout", type=float, default=10.0, help="seconds allowed for each wait")

    q = sub.add_parser("oversize")
    common(q)
    q.add_argument("--requests", type=int, default=50)
    q.add_argument("--headers", type=int, default=200)
    q.add_argument("--size", type=int, default=1024)

    q = sub.add_parser("encoder-flood")
    common(q)
    q.add_argument("--bytes", type=int, default=4 << 20)
    q.add_argument("--reference", action="store_true", help="finally send a request referencing the dynamic table")

    q = sub.add_parser("open-headers")
    common(q)
    q.add_argument("--streams", type=int, default=20)
    q.add_argument("--bytes", type=int, default=8 << 20, help="most bytes per stream")
    q.add_argument("--settle", type=float, default=1.0, help="stop when no more credit comes for this long")

    q = sub.add_parser("connect-flood")
    common(q)
    q.add_argument("--streams", type=int, default=300)
    q.add_argument("--target-host", default="127.0.0.1")
    q.add_argument("--target-port", type=int, required=True)
    q.add_argument("--settle", type=float, default=1.0)

    q = sub.add_parser("late-request")
    common(q)
    q.add_argument("--first", required=True, help="the first request's path")
    q.add_argument("--second", required=True, help="the path requested once the first has ended")

    q = sub.add_parser("amplification")
    common(q, tls=False)
    q.add_argument("--listen", type=float, default=3.0, help="seconds to collect what comes back")

    q = sub.add_parser("handshakes")
    common(q, tls=False)
    q.add_argument("--count", type=int, default=50)
    q.add_argument("--listen", type=float, default=1.0)
    q.add_argument("--answer-retry", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "amplification":
            result = amplification(args)
        elif args.command == "handshakes":
            result = handshakes(args)
        else:
            run = {"oversize": oversize, "encoder-flood": encoder_flood, "open-headers": open_headers, "connect-flood": connect_flood, "late-request": late_request}[args.command]
            result = asyncio.run(run(args))
    except Failure as exc:
        log(f"failed: {exc}")
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
