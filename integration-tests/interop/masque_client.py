#!/usr/bin/env python3
"""CONNECT-UDP over HTTP/3 interop client built on aioquic.

It checks that a proxy interoperates with an independent HTTP/3 stack:
  * RFC 9220 extended CONNECT (":protocol connect-udp") on a request stream,
  * RFC 9297 HTTP Datagrams (SETTINGS_H3_DATAGRAM, QUIC DATAGRAM frames keyed
    by quarter stream ID),
  * RFC 9298 UDP proxying (context ID 0 followed by the UDP payload).

The UDP target is expected to echo each datagram back. The script sends
--count unique payloads and counts the echoes that come back intact.

Output: progress goes to stderr; stdout carries exactly one JSON line:
  {"status": 200, "sent": N, "received": M, "alpn": "h3"}
or, when the proxy answers with a non-2xx status,
  {"status": 403, "sent": 0, "received": 0}
With --linger, the 2xx line also has "proxy_closed": true/false.
Exit 0 on a completed run (whatever M is), 1 on connection, handshake or
protocol failures (message on stderr), 2 on bad arguments.

SETTINGS_H3_DATAGRAM: aioquic's H3Connection only puts SETTINGS_H3_DATAGRAM
(0x33) in its SETTINGS when it is created with enable_webtransport=True (and
then it also announces SETTINGS_ENABLE_WEBTRANSPORT); max_datagram_frame_size
in the QUIC configuration only sets the QUIC transport parameter. A subclass
below adds H3_DATAGRAM=1 to the local SETTINGS whenever the QUIC configuration
has max_datagram_frame_size set, without announcing WebTransport.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import socket
import struct
import sys
import time
from urllib.parse import quote, urlsplit

try:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.buffer import Buffer, BufferReadError
    from aioquic.h3.connection import ErrorCode, H3Connection, Setting
    from aioquic.h3.events import (
        DataReceived,
        DatagramReceived,
        H3Event,
        HeadersReceived,
    )
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import (
        ConnectionTerminated,
        HandshakeCompleted,
        ProtocolNegotiated,
        QuicEvent,
        StreamReset,
    )
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"masque_client: aioquic is not installed ({exc}); "
          "pip install -r requirements.txt", file=sys.stderr)
    sys.exit(1)

from common import Failure, H3DatagramConnection, host_port, wait_for

DEFAULT_TEMPLATE = "/.well-known/masque/udp/{target_host}/{target_port}/"
SEQ = struct.Struct("!Q")
# Largest payload that fits one QUIC packet of aioquic's default 1200-byte
# max_datagram_size: 1200 - short header (1 + up to 20 CID + up to 4 PN)
# - AEAD tag 16 - DATAGRAM frame type 1 and length 2 - quarter stream ID
# (up to 2) - context ID 1.
MAX_PAYLOAD = 1150
# UDP receive buffer asked for on the client socket (the kernel may cap it).
RCVBUF = 4 * 1024 * 1024
# --stray-datagram: a client-initiated bidirectional stream ID (quarter stream ID
# 100) that no request uses.
STRAY_STREAM_ID = 400
# --bad-context: a context ID nobody registered.
BAD_CONTEXT_ID = 5


def log(msg: str) -> None:
    print(f"masque_client: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# arguments


def positive_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def payload_size(value: str) -> int:
    n = int(value)
    if not SEQ.size <= n <= MAX_PAYLOAD:
        raise argparse.ArgumentTypeError(
            f"must be between {SEQ.size} and {MAX_PAYLOAD} bytes")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CONNECT-UDP (RFC 9298) over HTTP/3 interop client (aioquic).")
    p.add_argument("--proxy", required=True, type=host_port,
                   help="proxy QUIC address HOST:PORT, e.g. 127.0.0.1:8443")
    p.add_argument("--target", required=True, type=host_port,
                   help="UDP target HOST:PORT, e.g. 127.0.0.1:9999 or [::1]:9999")
    p.add_argument("--ca", required=True,
                   help="PEM CA file used to verify the proxy certificate")
    p.add_argument("--server-name", default="localhost",
                   help="TLS SNI and :authority host (default: localhost)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help=f"URI template (default: {DEFAULT_TEMPLATE})")
    p.add_argument("--count", type=positive_int, default=100,
                   help="number of datagrams to send (default: 100)")
    p.add_argument("--size", type=payload_size, default=64,
                   help="UDP payload size in bytes (default: 64)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds allowed for the handshake, for the response, "
                        "and for the echoes after the last send (default: 10)")
    p.add_argument("--authorization", default=None,
                   help="value of an 'authorization' request header")
    p.add_argument("--batch", type=int, default=10,
                   help="datagrams handed to QUIC between pauses (default: 10)")
    p.add_argument("--interval", type=float, default=0.002,
                   help="pause between batches in seconds (default: 0.002)")
    p.add_argument("--stray-datagram", action="store_true",
                   help="once the flow is open, also send one HTTP Datagram for "
                        f"request stream {STRAY_STREAM_ID}, which has no request "
                        "(a proxy drops it, RFC 9297 §2.1)")
    p.add_argument("--linger", type=float, default=0.0,
                   help="after the echoes, keep the flow open up to this many "
                        "seconds, sending nothing, and report in "
                        "\"proxy_closed\" whether the proxy ended the request "
                        "stream meanwhile (e.g. on its idle timeout)")
    p.add_argument("--bad-context", action="store_true",
                   help="once the flow is open, first send one HTTP Datagram on "
                        f"it with context ID {BAD_CONTEXT_ID}, which was never "
                        "registered (a proxy drops it, RFC 9298 §4)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# URI template (RFC 6570, the subset RFC 9298 templates use)

_UNRESERVED = "-._~"  # plus ALPHA / DIGIT, which quote() never escapes


def expand_template(template: str, variables: dict[str, str]) -> str:
    """Expand {var}, {var1,var2}, {?var,...} and {&var,...} expressions.

    Values are percent-encoded as RFC 6570 simple string expansion requires:
    everything except unreserved characters, so "::1" becomes "%3A%3A1".
    """

    def enc(v: str) -> str:
        return quote(v, safe=_UNRESERVED)

    def repl(m: re.Match[str]) -> str:
        expr = m.group(1)
        op = expr[0] if expr and expr[0] in "?&" else ""
        names = (expr[1:] if op else expr).split(",")
        for name in names:
            if name not in variables:
                raise ValueError(f"unknown template variable {name!r}")
        if op:
            return op + "&".join(f"{n}={enc(variables[n])}" for n in names)
        return ",".join(enc(variables[n]) for n in names)

    return re.sub(r"\{([^}]*)\}", repl, template)


def authority_of(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def request_target(args: argparse.Namespace) -> tuple[str, str]:
    """Return (:authority, :path) for the CONNECT-UDP request."""
    target_host, target_port = args.target
    expanded = expand_template(args.template, {
        "target_host": target_host, "target_port": str(target_port)})
    authority = authority_of(args.server_name, args.proxy[1])
    if expanded.startswith(("https://", "http://")):
        parts = urlsplit(expanded)
        authority = parts.netloc
        expanded = parts.path + (f"?{parts.query}" if parts.query else "")
    if not expanded.startswith("/"):
        raise ValueError(f"template does not expand to an absolute path: {expanded!r}")
    return authority, expanded


# --------------------------------------------------------------------------
# HTTP/3


class MasqueClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http: H3Connection | None = None
        self.alpn: str | None = None
        self.handshake_done = False
        self.stream_id: int | None = None
        self.terminated: ConnectionTerminated | None = None
        self.changed = asyncio.Event()  # set on anything the main flow waits for
        self.response_headers: list[tuple[bytes, bytes]] | None = None
        self.stream_ended = False
        self.stream_reset: int | None = None
        # datagram accounting
        self.expected: dict[int, bytes] = {}
        self.received_seqs: set[int] = set()
        self.datagrams_in = 0
        self.unknown_context = 0
        self.mismatched = 0
        self.duplicates = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # Echoes arrive in bursts; a small receive buffer would drop them here,
        # in the client, and the count would blame the proxy.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_RCVBUFFORCE (Linux, 33; needs CAP_NET_ADMIN) passes rmem_max
            force = getattr(socket, "SO_RCVBUFFORCE",
                            33 if sys.platform.startswith("linux") else None)
            for opt in (force, socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                    break
                except OSError:
                    continue

    # -- events ------------------------------------------------------------

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_done = True
        elif isinstance(event, ProtocolNegotiated):
            self.alpn = event.alpn_protocol
            if self.http is None and event.alpn_protocol == "h3":
                self.http = H3DatagramConnection(self._quic, enable_webtransport=False)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, StreamReset) and event.stream_id == self.stream_id:
            self.stream_reset = event.error_code

        if self.http is not None:
            for h3_event in self.http.handle_event(event):
                self.h3_event_received(h3_event)
        self.changed.set()

    def h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, DatagramReceived):
            if event.stream_id == self.stream_id:
                self.on_datagram(event.data)
            return
        if getattr(event, "stream_id", None) != self.stream_id:
            return
        if isinstance(event, HeadersReceived):
            if self.response_headers is None:
                status = dict(event.headers).get(b":status", b"")
                # interim 1xx responses are skipped
                if not status.startswith(b"1"):
                    self.response_headers = event.headers
            if event.stream_ended:
                self.stream_ended = True
        elif isinstance(event, DataReceived):
            # capsules (RFC 9297 §3) are not needed for this check: ignore them
            if event.stream_ended:
                self.stream_ended = True

    def on_datagram(self, data: bytes) -> None:
        self.datagrams_in += 1
        buf = Buffer(data=data)
        try:
            context_id = buf.pull_uint_var()
        except BufferReadError:
            self.mismatched += 1
            return
        if context_id != 0:
            # RFC 9298 §4: unknown context IDs are dropped
            self.unknown_context += 1
            return
        payload = data[buf.tell():]
        if len(payload) < SEQ.size:
            self.mismatched += 1
            return
        (seq,) = SEQ.unpack_from(payload)
        if self.expected.get(seq) != payload:
            self.mismatched += 1
        elif seq in self.received_seqs:
            self.duplicates += 1
        else:
            self.received_seqs.add(seq)

    # -- helpers -------------------------------------------------------------

    def check_alive(self) -> None:
        if self.terminated is not None:
            t = self.terminated
            raise Failure(
                f"connection closed: error_code=0x{t.error_code:x} "
                f"frame_type={t.frame_type} reason={t.reason_phrase!r}")

    async def wait_for(self, predicate, timeout: float, what: str) -> None:
        await wait_for(self.changed, self.check_alive, predicate, timeout, what)
    def pending_datagrams(self) -> int:
        # aioquic queues DATAGRAM frames until congestion control lets them out
        return len(getattr(self._quic, "_datagrams_pending", ()))


def make_payload(seq: int, size: int) -> bytes:
    filler = bytes((seq + i) & 0xFF for i in range(size - SEQ.size))
    return SEQ.pack(seq) + filler


async def run(args: argparse.Namespace) -> dict:
    authority, path = request_target(args)
    proxy_host, proxy_port = args.proxy

    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        max_datagram_frame_size=65536,
        server_name=args.server_name,
    )
    try:
        configuration.load_verify_locations(args.ca)
    except Exception as exc:
        raise Failure(f"cannot load CA file {args.ca!r}: {exc}") from exc

    log(f"connecting to {authority_of(proxy_host, proxy_port)} "
        f"(SNI {args.server_name})")
    cm = connect(proxy_host, proxy_port, configuration=configuration,
                 create_protocol=MasqueClientProtocol, wait_connected=False)
    client: MasqueClientProtocol = await cm.__aenter__()
    try:
        client.transmit()  # connect() left the first flight to us
        await client.wait_for(lambda: client.handshake_done, args.timeout,
                              "the QUIC handshake")
        if client.alpn != "h3" or client.http is None:
            raise Failure(f"ALPN negotiated {client.alpn!r}, expected 'h3'")
        return await exchange(client, args, authority, path)
    finally:
        if client.terminated is None:
            client.close(error_code=ErrorCode.H3_NO_ERROR)
        await cm.__aexit__(None, None, None)


async def exchange(client: MasqueClientProtocol, args: argparse.Namespace,
                   authority: str, path: str) -> dict:
    http = client.http
    assert http is not None
    quic = client._quic

    stream_id = quic.get_next_available_stream_id()
    client.stream_id = stream_id
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", b"connect-udp"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"capsule-protocol", b"?1"),
    ]
    if args.authorization is not None:
        headers.append((b"authorization", args.authorization.encode()))
    log(f"CONNECT :protocol=connect-udp :authority={authority} :path={path}")
    http.send_headers(stream_id, headers, end_stream=False)
    client.transmit()

    def response_or_end() -> bool:
        if client.stream_reset is not None and client.response_headers is None:
            raise Failure(f"request stream reset by peer "
                          f"(error 0x{client.stream_reset:x}) before a response")
        return client.response_headers is not None or client.stream_ended

    await client.wait_for(response_or_end, args.timeout, "the response HEADERS")
    if client.response_headers is None:
        raise Failure("request stream ended without response HEADERS")
    response = dict(client.response_headers)
    try:
        status = int(response[b":status"])
    except (KeyError, ValueError):
        raise Failure(f"bad :status in response: {response.get(b':status')!r}")
    log(f"response status {status}"
        + (f", capsule-protocol {response[b'capsule-protocol'].decode()}"
           if b"capsule-protocol" in response else ""))
    if not 200 <= status < 300:
        return {"status": status, "sent": 0, "received": 0}

    # RFC 9297 §2.1.1: no HTTP datagram before the peer's SETTINGS_H3_DATAGRAM=1
    await client.wait_for(lambda: http.received_settings is not None,
                          args.timeout, "the proxy's SETTINGS")
    peer = http.received_settings or {}
    if peer.get(Setting.H3_DATAGRAM) != 1:
        raise Failure("the proxy did not send SETTINGS_H3_DATAGRAM=1 "
                      f"(its SETTINGS: { {hex(k): v for k, v in peer.items()} })")
    if quic._remote_max_datagram_frame_size is None:
        raise Failure("the proxy did not send the max_datagram_frame_size "
                      "transport parameter")
    log(f"proxy SETTINGS: H3_DATAGRAM={peer.get(Setting.H3_DATAGRAM)} "
        f"ENABLE_CONNECT_PROTOCOL={peer.get(Setting.ENABLE_CONNECT_PROTOCOL)}; "
        f"max_datagram_frame_size={quic._remote_max_datagram_frame_size}")

    def stream_gone() -> bool:
        return client.stream_ended or client.stream_reset is not None

    # Datagrams a proxy must drop without ending the flow.
    if args.bad_context:
        log(f"sending a datagram with context ID {BAD_CONTEXT_ID}")
        http.send_datagram(stream_id, bytes([BAD_CONTEXT_ID]) + make_payload(0, args.size))
    if args.stray_datagram:
        if STRAY_STREAM_ID == stream_id:
            raise Failure(f"stream {STRAY_STREAM_ID} carries the request itself")
        log(f"sending a datagram for stream {STRAY_STREAM_ID}, which has no request")
        http.send_datagram(STRAY_STREAM_ID, b"\x00" + make_payload(0, args.size))
    if args.bad_context or args.stray_datagram:
        client.transmit()

    # send, paced: a batch, then let QUIC drain before the next
    sent = 0
    batch = max(1, args.batch)
    started = time.monotonic()
    for seq in range(args.count):
        client.check_alive()
        if stream_gone():
            log("request stream closed by the proxy while sending")
            break
        payload = make_payload(seq, args.size)
        client.expected[seq] = payload
        http.send_datagram(stream_id, b"\x00" + payload)  # context ID 0
        sent += 1
        if sent % batch == 0:
            client.transmit()
            await asyncio.sleep(args.interval)
            while client.pending_datagrams() > batch and client.terminated is None:
                await asyncio.sleep(args.interval)
    client.transmit()
    log(f"sent {sent} datagrams in {time.monotonic() - started:.3f}s")

    # wait for the echoes
    try:
        await client.wait_for(
            lambda: len(client.received_seqs) >= sent or stream_gone(),
            args.timeout, "the echoes")
    except Failure as exc:
        if client.terminated is not None:
            raise
        log(f"{exc}")  # timeout: report what came back
    if stream_gone():
        log("request stream closed by the proxy"
            + (f" (reset 0x{client.stream_reset:x})"
               if client.stream_reset is not None else ""))
    proxy_closed = None
    if args.linger > 0:
        lingered = time.monotonic()
        try:
            await client.wait_for(stream_gone, args.linger,
                                  "the proxy to end the request stream")
        except Failure as exc:
            if client.terminated is not None:
                raise
            log(f"{exc}")
        proxy_closed = stream_gone()
        log(f"lingered {time.monotonic() - lingered:.3f}s; "
            f"request stream {'ended by the proxy' if proxy_closed else 'still open'}")
    received = len(client.received_seqs)
    log(f"received {received}/{sent} echoes in {time.monotonic() - started:.3f}s "
        f"(datagrams in: {client.datagrams_in}, mismatched: {client.mismatched}, "
        f"duplicates: {client.duplicates}, unknown context: {client.unknown_context})")
    result = {"status": status, "sent": sent, "received": received, "alpn": client.alpn}
    if proxy_closed is not None:
        result["proxy_closed"] = proxy_closed
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        request_target(args)
    except ValueError as exc:
        print(f"masque_client: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(args))
    except Failure as exc:
        print(f"masque_client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"masque_client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
