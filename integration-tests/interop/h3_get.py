#!/usr/bin/env python3
"""A small HTTP/3 GET client built on aioquic, for tests of QUIC interception.

It opens one QUIC connection to --connect (a UDP address: Oxy's `protocol: udp`
endpoint, or the local port of an `oxy-client udp --listen` relay), with --server-name
as SNI and as the :authority host, verifying the server against --ca, and sends one GET
per --path, one after the other on that connection. --cipher-suite (repeatable) offers
only the TLS 1.3 suites it names (AES_128_GCM_SHA256, AES_256_GCM_SHA384,
CHACHA20_POLY1305_SHA256) instead of aioquic's default list.

Output: progress goes to stderr; stdout carries one JSON line per request:
  {"path": "/hello", "status": 200, "headers": {...}, "body": "..."}
On a connection, handshake or protocol failure it prints {"error": "..."} (the same
reason on stderr) and exits 1; a server certificate that does not verify reads
"certificate verification failed: ...". Exit 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

try:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import ErrorCode, H3Connection
    from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import (
        ConnectionTerminated,
        HandshakeCompleted,
        ProtocolNegotiated,
        QuicEvent,
        StreamReset,
    )
    from aioquic.tls import AlertDescription, CipherSuite
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"h3_get: aioquic is not installed ({exc}); pip install -r requirements.txt", file=sys.stderr)
    sys.exit(1)

from common import Failure, host_port, wait_for

# QUIC CRYPTO_ERROR (RFC 9001 §4.8): 0x100 + the TLS alert.
CRYPTO_ERROR = 0x100
CERTIFICATE_ALERTS = {
    AlertDescription.bad_certificate,
    AlertDescription.unsupported_certificate,
    AlertDescription.certificate_revoked,
    AlertDescription.certificate_expired,
    AlertDescription.certificate_unknown,
    AlertDescription.unknown_ca,
}


# The TLS 1.3 suites --cipher-suite may name (aioquic's CipherSuite names).
SUITES = ["AES_128_GCM_SHA256", "AES_256_GCM_SHA384", "CHACHA20_POLY1305_SHA256"]


def log(msg: str) -> None:
    print(f"h3_get: {msg}", file=sys.stderr, flush=True)


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http: H3Connection | None = None
        self.alpn: str | None = None
        self.handshake_done = False
        self.terminated: ConnectionTerminated | None = None
        self.changed = asyncio.Event()
        # stream id -> [headers, body, ended, reset error code]
        self.streams: dict[int, list] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_done = True
        elif isinstance(event, ProtocolNegotiated):
            self.alpn = event.alpn_protocol
            if self.http is None and event.alpn_protocol == "h3":
                self.http = H3Connection(self._quic)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id][3] = event.error_code
        if self.http is not None:
            for h3_event in self.http.handle_event(event):
                self.h3_event_received(h3_event)
        self.changed.set()

    def h3_event_received(self, event: H3Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", None))
        if stream is None:
            return
        if isinstance(event, HeadersReceived):
            status = dict(event.headers).get(b":status", b"")
            if stream[0] is None and not status.startswith(b"1"):
                stream[0] = event.headers
            # trailers (a second HEADERS) are ignored
        elif isinstance(event, DataReceived):
            stream[1] += event.data
        if getattr(event, "stream_ended", False):
            stream[2] = True

    def check_alive(self) -> None:
        # aioquic reports ConnectionTerminated only once its closing period (3 PTO) is
        # over; the close it decided on (a certificate it refused) is known at once.
        t = self.terminated or getattr(self._quic, "_close_event", None)
        if t is None:
            return
        alert = t.error_code - CRYPTO_ERROR
        if 0 <= alert < 0x100 and alert in CERTIFICATE_ALERTS:
            raise Failure(f"certificate verification failed: {t.reason_phrase or AlertDescription(alert).name} "
                          f"(error_code=0x{t.error_code:x})")
        raise Failure(f"connection closed: error_code=0x{t.error_code:x} "
                      f"frame_type={t.frame_type} reason={t.reason_phrase!r}")

    async def wait_for(self, predicate, timeout: float, what: str) -> None:
        # polled too: a close aioquic decided on raises no event until later
        await wait_for(self.changed, self.check_alive, predicate, timeout, what, poll=0.05)
    async def get(self, authority: str, path: str, timeout: float) -> dict:
        assert self.http is not None
        stream_id = self._quic.get_next_available_stream_id()
        self.streams[stream_id] = [None, b"", False, None]
        self.http.send_headers(stream_id, [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"oxy-tests-h3-get"),
        ], end_stream=True)
        self.transmit()
        stream = self.streams[stream_id]

        def done() -> bool:
            if stream[3] is not None:
                raise Failure(f"GET {path}: stream reset by the server (error 0x{stream[3]:x})")
            return stream[2]

        await self.wait_for(done, timeout, f"the response to GET {path}")
        if stream[0] is None:
            raise Failure(f"GET {path}: the stream ended without response HEADERS")
        headers = {k.decode(): v.decode(errors="replace") for k, v in stream[0]}
        status = int(headers.pop(":status", "0"))
        return {"path": path, "status": status, "headers": headers, "body": stream[1].decode(errors="replace")}


async def run(args: argparse.Namespace) -> None:
    host, port = args.connect
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=args.server_name)
    if args.cipher_suite:
        configuration.cipher_suites = [CipherSuite[name] for name in args.cipher_suite]
    try:
        configuration.load_verify_locations(args.ca)
    except Exception as exc:
        raise Failure(f"cannot load CA file {args.ca!r}: {exc}") from exc
    authority = args.authority or args.server_name
    log(f"connecting to {host}:{port} (SNI {args.server_name})")
    cm = connect(host, port, configuration=configuration, create_protocol=Client, wait_connected=False)
    client: Client = await cm.__aenter__()
    try:
        client.transmit()
        await client.wait_for(lambda: client.handshake_done, args.timeout, "the QUIC handshake")
        if client.alpn != "h3" or client.http is None:
            raise Failure(f"ALPN negotiated {client.alpn!r}, expected 'h3'")
        for path in args.path:
            result = await client.get(authority, path, args.timeout)
            log(f"GET {path}: {result['status']}")
            print(json.dumps(result), flush=True)
    finally:
        if client.terminated is None:
            client.close(error_code=ErrorCode.H3_NO_ERROR)
        await cm.__aexit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="HTTP/3 GET client (aioquic).")
    p.add_argument("--connect", required=True, type=host_port, help="UDP address HOST:PORT to send to")
    p.add_argument("--server-name", required=True, help="TLS SNI and :authority host")
    p.add_argument("--authority", default=None, help=":authority (default: the server name)")
    p.add_argument("--ca", required=True, help="PEM CA file that verifies the server")
    p.add_argument("--path", action="append", required=True, help="a path to GET (repeatable, in order)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for the handshake and for each response")
    p.add_argument("--cipher-suite", action="append", default=[], choices=SUITES,
                   help="offer only these TLS 1.3 cipher suites (repeatable; default: aioquic's)")
    args = p.parse_args(argv)
    try:
        asyncio.run(run(args))
    except (Failure, OSError) as exc:
        log(str(exc))
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
