#!/usr/bin/env python3
"""CONNECT-IP over HTTP/3 interop client built on aioquic.

It checks that a proxy serves IP proxying (RFC 9484) to an independent HTTP/3 stack:
  * RFC 9220 extended CONNECT (":protocol connect-ip") on a request stream,
  * RFC 9297 HTTP Datagrams (SETTINGS_H3_DATAGRAM, QUIC DATAGRAM frames keyed by
    quarter stream ID, context ID 0) and the Capsule Protocol on the stream,
  * RFC 9484 ADDRESS_ASSIGN, ADDRESS_REQUEST and ROUTE_ADVERTISEMENT capsules,
  * full IP packets, built and checked here by hand with struct (IPv4 header
    checksums, UDP and ICMP/ICMPv6 checksums over their pseudo-headers), so nothing
    is shared with the proxy's own packet code.

Once the stream is open the client waits for the proxy's first ADDRESS_ASSIGN and
ROUTE_ADVERTISEMENT, then runs the steps asked for, in this order:
  --address-request   ADDRESS_REQUEST for any IPv4 (ID 1), any IPv6 (ID 2) and
                      192.0.2.77/32 (ID 3), and the ADDRESS_ASSIGN answering it
  --spoof HOST:PORT   one UDP packet from an address the proxy did not assign
  --udp HOST:PORT     --count UDP round trips to an echo server (repeatable)
  --ping HOST         --count ICMP (ICMPv6) echo round trips (repeatable)
  --deny HOST:PORT    one UDP packet that the proxy must refuse with an ICMP error
                      (repeatable): its type, code, source and quote are reported
  --capsules          packets go as DATAGRAM capsules on the stream, not datagrams
  --malformed KIND    a malformed capsule (request-id-zero, unordered-routes,
                      too-large); reports whether the proxy then ends the stream
  --close-stream      the client ends the request stream (FIN); reports whether the
                      proxy ends its side too

Output: progress goes to stderr; stdout carries exactly one JSON line, e.g.
  {"status": 200, "capsule_protocol": "?1", "assigned": [...], "routes": [...],
   "udp": [{"target": ..., "sent": 3, "received": 3, "errors": []}], ...}
or, for a non-2xx answer, {"status": 503, "body": "..."}.
Exit 0 on a completed run (whatever came back), 1 on connection, handshake or
protocol failures (message on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import re
import struct
import sys
from urllib.parse import quote

try:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import ErrorCode, H3Connection, Setting
    from aioquic.h3.events import DataReceived, DatagramReceived, H3Event, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import (
        ConnectionTerminated,
        HandshakeCompleted,
        ProtocolNegotiated,
        QuicEvent,
        StreamReset,
    )
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"connect_ip_client: aioquic is not installed ({exc}); "
          "pip install -r requirements.txt", file=sys.stderr)
    sys.exit(1)

from common import Failure, H3DatagramConnection, host_port, wait_for

DEFAULT_TEMPLATE = "/.well-known/masque/ip/{target}/{ipproto}/"

# Capsule types (RFC 9297 §3.5, RFC 9484 §4.7).
DATAGRAM = 0x00
ADDRESS_ASSIGN = 0x01
ADDRESS_REQUEST = 0x02
ROUTE_ADVERTISEMENT = 0x03

# IP protocol numbers.
ICMP = 1
UDP = 17
ICMPV6 = 58

# An address no pool hands out, for --spoof (one per family).
SPOOFED = {4: ipaddress.ip_address("198.51.100.9"), 6: ipaddress.ip_address("2001:db8::9")}
# Echo identifier of --ping.
PING_ID = 0x1234
# First UDP source port used by --udp; each target gets its own.
UDP_PORT_BASE = 40000


def log(msg: str) -> None:
    print(f"connect_ip_client: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# QUIC varints and capsules


def varint(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack("!H", 0x4000 | n)
    if n < 1 << 30:
        return struct.pack("!I", 0x8000_0000 | n)
    return struct.pack("!Q", 0xC000_0000_0000_0000 | n)


def read_varint(buf: bytes, at: int) -> tuple[int, int] | None:
    """(value, next offset), or None when buf ends first."""
    if at >= len(buf):
        return None
    length = 1 << (buf[at] >> 6)
    if at + length > len(buf):
        return None
    value = buf[at] & 0x3F
    for b in buf[at + 1:at + length]:
        value = (value << 8) | b
    return value, at + length


def capsule(kind: int, value: bytes) -> bytes:
    return varint(kind) + varint(len(value)) + value


class CapsuleReader:
    """Splits a byte stream into (type, value) capsules."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while True:
            kind = read_varint(self.buf, 0)
            if kind is None:
                break
            length = read_varint(self.buf, kind[1])
            if length is None:
                break
            end = length[1] + length[0]
            if end > len(self.buf):
                break
            out.append((kind[0], self.buf[length[1]:end]))
            self.buf = self.buf[end:]
        return out


def parse_addresses(value: bytes) -> list[dict]:
    """ADDRESS_ASSIGN / ADDRESS_REQUEST entries (RFC 9484 §4.7.1, §4.7.2)."""
    out = []
    at = 0
    while at < len(value):
        rid = read_varint(value, at)
        if rid is None:
            raise Failure(f"truncated address entry in {value.hex()}")
        at = rid[1]
        version = value[at]
        size = {4: 4, 6: 16}.get(version)
        if size is None:
            raise Failure(f"IP version {version} in an address entry")
        address = ipaddress.ip_address(value[at + 1:at + 1 + size])
        prefix = value[at + 1 + size]
        at += 2 + size
        out.append({"id": rid[0], "version": version, "address": str(address), "prefix": prefix})
    return out


def encode_address(rid: int, prefix: str) -> bytes:
    net = ipaddress.ip_network(prefix)
    return varint(rid) + bytes([net.version]) + net.network_address.packed + bytes([net.prefixlen])


def parse_routes(value: bytes) -> list[dict]:
    """ROUTE_ADVERTISEMENT ranges (RFC 9484 §4.7.3)."""
    out = []
    at = 0
    while at < len(value):
        version = value[at]
        size = {4: 4, 6: 16}.get(version)
        if size is None:
            raise Failure(f"IP version {version} in a route")
        start = ipaddress.ip_address(value[at + 1:at + 1 + size])
        end = ipaddress.ip_address(value[at + 1 + size:at + 1 + 2 * size])
        protocol = value[at + 1 + 2 * size]
        at += 2 + 2 * size
        out.append({"version": version, "start": str(start), "end": str(end), "protocol": protocol})
    return out


# --------------------------------------------------------------------------
# IP, UDP and ICMP by hand


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src, dst, protocol: int, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, protocol, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, protocol)


def ip_packet(src, dst, protocol: int, payload: bytes, ttl: int = 64) -> bytes:
    if src.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x0101, 0x4000,
                             ttl, protocol, 0, src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + payload
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), protocol, ttl, src.packed, dst.packed)
    return header + payload


def udp_packet(src, sport: int, dst, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    sum_ = checksum(pseudo_header(src, dst, UDP, length) + header + payload) or 0xFFFF
    return ip_packet(src, dst, UDP, header[:6] + struct.pack("!H", sum_) + payload)


def icmp_echo_request(src, dst, ident: int, seq: int, data: bytes) -> bytes:
    if src.version == 4:
        message = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
        sum_ = checksum(message)
        return ip_packet(src, dst, ICMP, message[:2] + struct.pack("!H", sum_) + message[4:])
    message = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + data
    sum_ = checksum(pseudo_header(src, dst, ICMPV6, len(message)) + message)
    return ip_packet(src, dst, ICMPV6, message[:2] + struct.pack("!H", sum_) + message[4:])


def parse_ip(packet: bytes) -> dict:
    """The fields of an IP packet, with `errors` listing what does not check."""
    errors = []
    if not packet:
        raise ValueError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            raise ValueError("short IPv4 header")
        total, = struct.unpack_from("!H", packet, 2)
        ttl, protocol = packet[8], packet[9]
        src = ipaddress.ip_address(packet[12:16])
        dst = ipaddress.ip_address(packet[16:20])
        if checksum(packet[:ihl]) != 0:
            errors.append("ipv4 header checksum")
        if total != len(packet):
            errors.append(f"ipv4 total length {total} != {len(packet)}")
        payload = packet[ihl:total]
    elif version == 6:
        if len(packet) < 40:
            raise ValueError("short IPv6 header")
        length, protocol, ttl = struct.unpack_from("!HBB", packet, 4)
        src = ipaddress.ip_address(packet[8:24])
        dst = ipaddress.ip_address(packet[24:40])
        if 40 + length != len(packet):
            errors.append(f"ipv6 payload length {length} != {len(packet) - 40}")
        payload = packet[40:40 + length]
    else:
        raise ValueError(f"IP version {version}")
    out = {"version": version, "src": src, "dst": dst, "protocol": protocol, "ttl": ttl,
           "payload": payload, "errors": errors}
    if protocol == UDP and len(payload) >= 8:
        sport, dport, length, sum_ = struct.unpack_from("!HHHH", payload)
        if length != len(payload):
            errors.append(f"udp length {length} != {len(payload)}")
        if sum_ == 0 and version == 4:
            pass  # no checksum (IPv4 only)
        elif checksum(pseudo_header(src, dst, UDP, len(payload)) + payload) != 0:
            errors.append("udp checksum")
        out.update(sport=sport, dport=dport, data=payload[8:])
    elif protocol in (ICMP, ICMPV6) and len(payload) >= 8:
        covered = payload if protocol == ICMP else pseudo_header(src, dst, ICMPV6, len(payload)) + payload
        if checksum(covered) != 0:
            errors.append("icmp checksum")
        out.update(icmp_type=payload[0], icmp_code=payload[1], icmp_rest=payload[4:8], data=payload[8:])
    return out


# --------------------------------------------------------------------------
# arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CONNECT-IP (RFC 9484) over HTTP/3 interop client (aioquic).")
    p.add_argument("--proxy", required=True, type=host_port, help="proxy QUIC address HOST:PORT")
    p.add_argument("--ca", required=True, help="PEM CA file that verifies the proxy")
    p.add_argument("--server-name", default="localhost", help="SNI and :authority host")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="URI template")
    p.add_argument("--target", default="*", help="{target}: *, an address, a prefix (a/n) or a name")
    p.add_argument("--ipproto", default="*", help="{ipproto}: * or 0-255")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for each wait")
    p.add_argument("--count", type=int, default=3, help="round trips per --udp and --ping")
    p.add_argument("--size", type=int, default=64, help="UDP and ICMP echo payload bytes")
    p.add_argument("--capsules", action="store_true",
                   help="send IP packets as DATAGRAM capsules on the request stream "
                        "rather than as HTTP Datagrams (RFC 9297 §3.5)")
    p.add_argument("--address-request", action="store_true")
    p.add_argument("--spoof", type=host_port, default=None)
    p.add_argument("--udp", type=host_port, action="append", default=[])
    p.add_argument("--ping", action="append", default=[])
    p.add_argument("--deny", type=host_port, action="append", default=[])
    p.add_argument("--malformed", choices=["request-id-zero", "unordered-routes", "too-large"], default=None)
    p.add_argument("--close-stream", action="store_true",
                   help="at the end, close the request stream (FIN) and report whether the "
                        "proxy then ends its side, before the connection closes")
    p.add_argument("--max-capsule", type=int, default=65552, help="the proxy's limit, for --malformed too-large")
    return p.parse_args(argv)


def request_path(args: argparse.Namespace) -> str:
    """The template expanded as RFC 6570 simple strings ('/' and ':' percent-encoded)."""
    values = {"target": args.target, "ipproto": args.ipproto}

    def repl(m: re.Match[str]) -> str:
        return quote(values[m.group(1)], safe="-._~*")

    return re.sub(r"\{(target|ipproto)\}", repl, args.template)


# --------------------------------------------------------------------------
# HTTP/3


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http: H3Connection | None = None
        self.alpn: str | None = None
        self.handshake_done = False
        self.stream_id: int | None = None
        self.terminated: ConnectionTerminated | None = None
        self.changed = asyncio.Event()
        self.response_headers: list[tuple[bytes, bytes]] | None = None
        self.body = b""
        self.stream_ended = False
        self.stream_reset: int | None = None
        self.capsules = CapsuleReader()
        self.assigns: list[list[dict]] = []
        self.routes: list[list[dict]] = []
        self.other_capsules: list[int] = []
        # Packets from the proxy: (how it came, parsed packet).
        self.packets: list[tuple[str, dict]] = []
        self.unparsable = 0
        self.use_capsules = False

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
                if not event.data or event.data[0] != 0:
                    self.unparsable += 1  # only context ID 0 carries IP packets
                else:
                    self.on_packet("datagram", event.data[1:])
            return
        if getattr(event, "stream_id", None) != self.stream_id:
            return
        if isinstance(event, HeadersReceived):
            if self.response_headers is None:
                status = dict(event.headers).get(b":status", b"")
                if not status.startswith(b"1"):
                    self.response_headers = event.headers
        elif isinstance(event, DataReceived):
            if self.is_success():
                for kind, value in self.capsules.feed(event.data):
                    self.on_capsule(kind, value)
            else:
                self.body += event.data
        if getattr(event, "stream_ended", False):
            self.stream_ended = True

    def is_success(self) -> bool:
        status = dict(self.response_headers or []).get(b":status", b"")
        return status.startswith(b"2")

    def on_capsule(self, kind: int, value: bytes) -> None:
        if kind == DATAGRAM:
            ctx = read_varint(value, 0)
            if ctx is None or ctx[0] != 0:
                self.unparsable += 1
            else:
                self.on_packet("capsule", value[ctx[1]:])
        elif kind == ADDRESS_ASSIGN:
            self.assigns.append(parse_addresses(value))
        elif kind == ROUTE_ADVERTISEMENT:
            self.routes.append(parse_routes(value))
        else:
            self.other_capsules.append(kind)

    def on_packet(self, how: str, data: bytes) -> None:
        try:
            self.packets.append((how, parse_ip(data)))
        except ValueError as exc:
            log(f"unparsable packet ({exc}): {data.hex()}")
            self.unparsable += 1

    def check_alive(self) -> None:
        if self.terminated is not None:
            t = self.terminated
            raise Failure(f"connection closed: error_code=0x{t.error_code:x} reason={t.reason_phrase!r}")

    def stream_gone(self) -> bool:
        return self.stream_ended or self.stream_reset is not None

    async def wait_for(self, predicate, timeout: float, what: str) -> None:
        await wait_for(self.changed, self.check_alive, predicate, timeout, what)
    async def wait_soft(self, predicate, timeout: float, what: str) -> bool:
        """Like wait_for, but a timeout is reported (False) rather than raised."""
        try:
            await self.wait_for(predicate, timeout, what)
            return True
        except Failure as exc:
            if self.terminated is not None:
                raise
            log(str(exc))
            return False

    def send_packet(self, packet: bytes) -> None:
        assert self.http is not None and self.stream_id is not None
        if self.use_capsules:
            self.send_capsule(DATAGRAM, b"\x00" + packet)  # context ID 0
            return
        self.http.send_datagram(self.stream_id, b"\x00" + packet)  # context ID 0
        self.transmit()

    def send_capsule(self, kind: int, value: bytes) -> None:
        self.send_stream(capsule(kind, value))

    def send_stream(self, data: bytes) -> None:
        assert self.http is not None and self.stream_id is not None
        self.http.send_data(self.stream_id, data, end_stream=False)
        self.transmit()

    def take_packet(self, match) -> dict | None:
        for i, (how, packet) in enumerate(self.packets):
            if match(packet):
                del self.packets[i]
                packet["via"] = how
                return packet
        return None

    async def wait_packet(self, match, timeout: float, what: str) -> dict | None:
        """The first packet from the proxy that `match`es (taken off the list), or None
        when none comes in time."""
        found: list[dict] = []

        def take() -> bool:
            packet = self.take_packet(match)
            if packet is not None:
                found.append(packet)
            return bool(found)

        await self.wait_soft(take, timeout, what)
        return found[0] if found else None


async def run(args: argparse.Namespace) -> dict:
    path = request_path(args)
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["h3"],
                                      max_datagram_frame_size=65536, server_name=args.server_name)
    try:
        configuration.load_verify_locations(args.ca)
    except Exception as exc:
        raise Failure(f"cannot load CA file {args.ca!r}: {exc}") from exc
    host, port = args.proxy
    cm = connect(host, port, configuration=configuration, create_protocol=Client, wait_connected=False)
    client: Client = await cm.__aenter__()
    try:
        client.transmit()
        await client.wait_for(lambda: client.handshake_done, args.timeout, "the QUIC handshake")
        if client.alpn != "h3" or client.http is None:
            raise Failure(f"ALPN negotiated {client.alpn!r}, expected 'h3'")
        return await session(client, args, f"{args.server_name}:{port}", path)
    finally:
        if client.terminated is None:
            client.close(error_code=ErrorCode.H3_NO_ERROR)
        await cm.__aexit__(None, None, None)


def assigned_address(client: Client, version: int):
    for entry in client.assigns[0] if client.assigns else []:
        if entry["version"] == version:
            return ipaddress.ip_address(entry["address"])
    raise Failure(f"no IPv{version} address assigned: {client.assigns}")


async def session(client: Client, args: argparse.Namespace, authority: str, path: str) -> dict:
    http = client.http
    assert http is not None
    stream_id = client._quic.get_next_available_stream_id()
    client.stream_id = stream_id
    log(f"CONNECT :protocol=connect-ip :authority={authority} :path={path}")
    http.send_headers(stream_id, [
        (b":method", b"CONNECT"),
        (b":protocol", b"connect-ip"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"capsule-protocol", b"?1"),
    ], end_stream=False)
    client.transmit()
    await client.wait_for(lambda: client.response_headers is not None or client.stream_gone(),
                          args.timeout, "the response HEADERS")
    if client.response_headers is None:
        raise Failure("request stream ended without a response")
    response = dict(client.response_headers)
    status = int(response[b":status"])
    log(f"response status {status}")
    if not 200 <= status < 300:
        await client.wait_soft(client.stream_gone, args.timeout, "the error body")
        return {"status": status, "body": client.body.decode(errors="replace")}

    await client.wait_for(lambda: http.received_settings is not None, args.timeout, "the proxy's SETTINGS")
    if (http.received_settings or {}).get(Setting.H3_DATAGRAM) != 1:
        raise Failure("the proxy did not send SETTINGS_H3_DATAGRAM=1")
    await client.wait_for(lambda: client.assigns and client.routes, args.timeout,
                          "ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT")
    client.use_capsules = args.capsules
    result: dict = {
        "status": status,
        "local_port": client._transport.get_extra_info("sockname")[1],
        "capsule_protocol": response.get(b"capsule-protocol", b"").decode(),
        "assigned": client.assigns[0],
        "routes": client.routes[0],
    }

    if args.address_request:
        request = b"".join([encode_address(1, "0.0.0.0/32"), encode_address(2, "::/128"),
                            encode_address(3, "192.0.2.77/32")])
        client.send_capsule(ADDRESS_REQUEST, request)
        await client.wait_for(lambda: len(client.assigns) >= 2, args.timeout, "the answering ADDRESS_ASSIGN")
        result["address_answer"] = client.assigns[1]

    if args.spoof is not None:
        host, port = args.spoof
        dst = ipaddress.ip_address(host)
        client.send_packet(udp_packet(SPOOFED[dst.version], 40999, dst, port, b"spoofed"))
        log(f"sent a packet from {SPOOFED[dst.version]} to {host}:{port}")

    result["udp"] = []
    for index, (host, port) in enumerate(args.udp):
        result["udp"].append(await udp_round_trips(client, args, ipaddress.ip_address(host), port,
                                                   UDP_PORT_BASE + index))
    result["ping"] = []
    for host in args.ping:
        result["ping"].append(await ping(client, args, ipaddress.ip_address(host)))
    result["deny"] = []
    for host, port in args.deny:
        result["deny"].append(await denied(client, args, ipaddress.ip_address(host), port))

    if args.malformed:
        kind = args.malformed
        if kind == "request-id-zero":
            client.send_capsule(ADDRESS_REQUEST, encode_address(0, "0.0.0.0/32"))
        elif kind == "unordered-routes":
            ranges = [(ipaddress.ip_address("11.0.0.0"), ipaddress.ip_address("12.0.0.0")),
                      (ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("1.0.0.0"))]
            client.send_capsule(ROUTE_ADVERTISEMENT,
                                b"".join(bytes([4]) + a.packed + b.packed + bytes([0]) for a, b in ranges))
        else:
            # A DATAGRAM capsule declaring one byte over the limit, and the start of it.
            client.send_stream(varint(DATAGRAM) + varint(args.max_capsule + 1) + bytes(100))
        closed = await client.wait_soft(client.stream_gone, args.timeout, "the proxy to end the stream")
        result["malformed"] = {"kind": kind, "stream_closed": closed,
                               "reset": client.stream_reset}
    if args.close_stream and not client.stream_gone():
        http.send_data(stream_id, b"", end_stream=True)
        client.transmit()
        result["proxy_ended_stream"] = await client.wait_soft(
            client.stream_gone, args.timeout, "the proxy to end its side of the stream")
    result["other_capsules"] = client.other_capsules
    result["unparsable"] = client.unparsable
    result["unexpected_packets"] = [describe(p) for _, p in client.packets]
    return result


def target_text(dst, port: int) -> str:
    """HOST:PORT, with IPv6 as [ADDR]:PORT."""
    return f"[{dst}]:{port}" if dst.version == 6 else f"{dst}:{port}"


def describe(packet: dict) -> dict:
    out = {k: str(v) if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else v
           for k, v in packet.items() if k not in ("payload", "data", "icmp_rest")}
    return out


async def udp_round_trips(client: Client, args, dst, port: int, sport: int) -> dict:
    src = assigned_address(client, dst.version)
    errors: list[str] = []
    sent = received = 0
    via = {"datagram": 0, "capsule": 0}
    for seq in range(args.count):
        payload = struct.pack("!I", seq) + os.urandom(max(0, args.size - 4))
        client.send_packet(udp_packet(src, sport, dst, port, payload))
        sent += 1

        packet = await client.wait_packet(
            lambda p: p["protocol"] == UDP and p.get("dport") == sport and p.get("data", b"")[:4] == payload[:4],
            args.timeout, f"the echo of UDP {seq} from {dst}:{port}")
        if packet is not None:
            problems = list(packet["errors"])
            if packet["src"] != dst or packet["dst"] != src:
                problems.append(f"addresses {packet['src']} -> {packet['dst']}")
            if packet["sport"] != port:
                problems.append(f"source port {packet['sport']}")
            if packet["data"] != payload:
                problems.append("payload differs")
            if packet["version"] == 4 and not 0 < packet["ttl"] <= 255:
                problems.append(f"ttl {packet['ttl']}")
            via[packet["via"]] += 1
            if problems:
                errors.append(f"{seq}: {', '.join(problems)}")
            else:
                received += 1
    log(f"UDP {dst}:{port}: {received}/{sent} echoes intact ({via['datagram']} as HTTP Datagrams, "
        f"{via['capsule']} in DATAGRAM capsules)")
    return {"target": target_text(dst, port), "sent": sent, "received": received, "errors": errors, "via": via}


async def ping(client: Client, args, dst) -> dict:
    src = assigned_address(client, dst.version)
    reply_type = 0 if dst.version == 4 else 129
    errors: list[str] = []
    sent = received = 0
    for seq in range(1, args.count + 1):
        data = os.urandom(max(8, args.size))
        client.send_packet(icmp_echo_request(src, dst, PING_ID, seq, data))
        sent += 1
        packet = await client.wait_packet(
            lambda p: p.get("icmp_type") == reply_type and struct.unpack("!HH", p["icmp_rest"]) == (PING_ID, seq),
            args.timeout, f"the echo reply {seq} from {dst}")
        if packet is not None:
            problems = list(packet["errors"])
            if packet["src"] != dst or packet["dst"] != src:
                problems.append(f"addresses {packet['src']} -> {packet['dst']}")
            if packet["icmp_code"] != 0:
                problems.append(f"code {packet['icmp_code']}")
            if packet["data"] != data:
                problems.append("data differs")
            if problems:
                errors.append(f"{seq}: {', '.join(problems)}")
            else:
                received += 1
    log(f"ping {dst}: {received}/{sent} replies intact")
    return {"target": str(dst), "sent": sent, "received": received, "errors": errors}


async def denied(client: Client, args, dst, port: int) -> dict:
    src = assigned_address(client, dst.version)
    original = udp_packet(src, 41000, dst, port, b"denied destination")
    client.send_packet(original)
    icmp = ICMP if dst.version == 4 else ICMPV6
    # An ICMP error whose quote starts with the original packet's IP header.
    header = 20 if dst.version == 4 else 40
    packet = await client.wait_packet(
        lambda p: p["protocol"] == icmp and p.get("icmp_type") not in (0, 129)
        and p.get("data", b"")[:header] == original[:header],
        args.timeout, f"an ICMP error about {dst}:{port}")
    if packet is None:
        return {"target": target_text(dst, port), "answered": False}
    quoted = packet["data"]
    log(f"{dst}:{port} answered with ICMP type {packet['icmp_type']} code {packet['icmp_code']} "
        f"from {packet['src']}")
    return {
        "target": target_text(dst, port),
        "answered": True,
        "type": packet["icmp_type"],
        "code": packet["icmp_code"],
        "from": str(packet["src"]),
        "to": str(packet["dst"]),
        "errors": packet["errors"],
        "quote_matches": original.startswith(quoted),
        "quoted_bytes": len(quoted),
        "via": packet["via"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except Failure as exc:
        print(f"connect_ip_client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"connect_ip_client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
