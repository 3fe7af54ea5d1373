// CONNECT-IP (RFC 9484) clients for tests, written independently of Oxy's Rust code:
// an HTTP/2 client (node:http2 extended CONNECT with :protocol connect-ip, TLS or h2c)
// and an HTTP/1.1 one (Upgrade: connect-ip on a raw TCP or TLS socket), the Capsule
// Protocol (RFC 9297) with the CONNECT-IP capsules, and IPv4/IPv6/UDP/ICMP packets built
// and checked by hand (header, UDP and ICMP checksums). The HTTP/3 client is
// interop/connect_ip_client.py (aioquic), run with `connectIpInterop`.

import { readFileSync } from "node:fs";
import { constants as http2constants, connect as http2Connect, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { isIPv4, isIPv6, connect as netConnect, type Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { extendedConnectAllowed } from "./h2.ts";
import { runInteropScript } from "./interop.ts";
import { repoRoot } from "./oxy.ts";

// ---------------------------------------------------------------------------------------
// QUIC variable-length integers (RFC 9000 §16)

export function encodeVarint(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad varint ${n}`);
  if (n < 0x40) return Buffer.from([n]);
  if (n < 0x4000) return Buffer.from([0x40 | (n >> 8), n & 0xff]);
  if (n < 0x40000000) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    b[0] |= 0x80;
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n) | (0xc0n << 56n));
  return b;
}

/** [value, bytes taken] of the varint at `at`, or undefined when `buf` ends first. */
export function decodeVarint(buf: Buffer, at = 0): [number, number] | undefined {
  if (at >= buf.length) return undefined;
  const len = 1 << (buf[at] >> 6);
  if (at + len > buf.length) return undefined;
  let value = buf[at] & 0x3f;
  for (let i = 1; i < len; i++) value = value * 256 + buf[at + i];
  return [value, len];
}

// ---------------------------------------------------------------------------------------
// Capsules (RFC 9297 §3.2) and the CONNECT-IP capsules (RFC 9484 §4.7)

export const DATAGRAM = 0x00;
export const ADDRESS_ASSIGN = 0x01;
export const ADDRESS_REQUEST = 0x02;
export const ROUTE_ADVERTISEMENT = 0x03;

export interface Capsule {
  type: number;
  value: Buffer;
}

export function encodeCapsule(type: number, value: Buffer): Buffer {
  return Buffer.concat([encodeVarint(type), encodeVarint(value.length), value]);
}

/** A DATAGRAM capsule carrying an IP packet under context ID 0 (RFC 9484 §6). */
export function datagramCapsule(packet: Buffer, context = 0): Buffer {
  return encodeCapsule(DATAGRAM, Buffer.concat([encodeVarint(context), packet]));
}

/** Splits a byte stream into capsules, across reads. */
export class CapsuleParser {
  private buf = Buffer.alloc(0);

  push(data: Buffer): Capsule[] {
    this.buf = Buffer.concat([this.buf, data]);
    const out: Capsule[] = [];
    for (;;) {
      const type = decodeVarint(this.buf, 0);
      if (!type) break;
      const length = decodeVarint(this.buf, type[1]);
      if (!length) break;
      const start = type[1] + length[1];
      if (start + length[0] > this.buf.length) break;
      out.push({ type: type[0], value: this.buf.subarray(start, start + length[0]) });
      this.buf = this.buf.subarray(start + length[0]);
    }
    return out;
  }

  /** Bytes of an incomplete capsule left over. */
  get pending(): number {
    return this.buf.length;
  }
}

/** An entry of ADDRESS_ASSIGN or ADDRESS_REQUEST (RFC 9484 §4.7.1, §4.7.2). */
export interface AddressEntry {
  requestId: number;
  version: 4 | 6;
  address: string;
  prefixLength: number;
}

export function parseAddressEntries(value: Buffer): AddressEntry[] {
  const out: AddressEntry[] = [];
  let at = 0;
  while (at < value.length) {
    const id = decodeVarint(value, at);
    if (!id) throw new Error(`truncated address entry: ${value.toString("hex")}`);
    at += id[1];
    const version = value[at];
    if (version !== 4 && version !== 6) throw new Error(`IP version ${version} in an address entry`);
    const size = version === 4 ? 4 : 16;
    if (at + 2 + size > value.length) throw new Error(`truncated address entry: ${value.toString("hex")}`);
    const address = ipToString(value.subarray(at + 1, at + 1 + size));
    out.push({ requestId: id[0], version, address, prefixLength: value[at + 1 + size] });
    at += 2 + size;
  }
  return out;
}

export function encodeAddressEntries(entries: { requestId: number; prefix: string }[]): Buffer {
  return Buffer.concat(
    entries.map(({ requestId, prefix }) => {
      const [address, length] = prefix.split("/");
      const bytes = ipToBytes(address);
      const version = bytes.length === 4 ? 4 : 6;
      return Buffer.concat([encodeVarint(requestId), Buffer.from([version]), bytes, Buffer.from([Number(length ?? bytes.length * 8)])]);
    }),
  );
}

/** A range of ROUTE_ADVERTISEMENT (RFC 9484 §4.7.3). */
export interface IpRange {
  version: 4 | 6;
  start: string;
  end: string;
  protocol: number;
}

export function parseRoutes(value: Buffer): IpRange[] {
  const out: IpRange[] = [];
  let at = 0;
  while (at < value.length) {
    const version = value[at];
    if (version !== 4 && version !== 6) throw new Error(`IP version ${version} in a route`);
    const size = version === 4 ? 4 : 16;
    if (at + 2 + 2 * size > value.length) throw new Error(`truncated route: ${value.toString("hex")}`);
    out.push({
      version,
      start: ipToString(value.subarray(at + 1, at + 1 + size)),
      end: ipToString(value.subarray(at + 1 + size, at + 1 + 2 * size)),
      protocol: value[at + 1 + 2 * size],
    });
    at += 2 + 2 * size;
  }
  return out;
}

export function encodeRoutes(ranges: { start: string; end: string; protocol: number }[]): Buffer {
  return Buffer.concat(
    ranges.map((r) => {
      const start = ipToBytes(r.start);
      return Buffer.concat([Buffer.from([start.length === 4 ? 4 : 6]), start, ipToBytes(r.end), Buffer.from([r.protocol])]);
    }),
  );
}

/** Whether `ranges` are ordered as RFC 9484 §4.7.3 requires: by version, then protocol,
 * then start, without overlap within one version and protocol; and each start <= end. */
export function routesOrdered(ranges: IpRange[]): boolean {
  for (const r of ranges) if (ipToBigInt(r.start) > ipToBigInt(r.end)) return false;
  for (let i = 1; i < ranges.length; i++) {
    const [a, b] = [ranges[i - 1], ranges[i]];
    if (a.version !== b.version) {
      if (a.version > b.version) return false;
      continue;
    }
    if (a.protocol !== b.protocol) {
      if (a.protocol > b.protocol) return false;
      continue;
    }
    if (ipToBigInt(b.start) <= ipToBigInt(a.end)) return false;
  }
  return true;
}

/** Whether some range of `ranges` covers `ip` for `protocol` (0 in a range: any). */
export function routeCovers(ranges: IpRange[], ip: string, protocol = 0): boolean {
  const version = isIPv4(ip) ? 4 : 6;
  const n = ipToBigInt(ip);
  return ranges.some(
    (r) => r.version === version && (r.protocol === 0 || r.protocol === protocol) && ipToBigInt(r.start) <= n && n <= ipToBigInt(r.end),
  );
}

// ---------------------------------------------------------------------------------------
// Addresses

export function ipToBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split(".").map(Number));
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${ip}`);
  let text = ip;
  let tail: number[] = [];
  const v4 = text.match(/^(.*:)(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const b = v4[2].split(".").map(Number);
    tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    text = v4[1] + "0";
  }
  const [head, rest] = text.split("::");
  const parse = (s: string | undefined) => (s ? s.split(":").map((g) => parseInt(g, 16)) : []);
  let groups = parse(head);
  if (rest !== undefined) {
    const after = parse(rest);
    if (v4) after.pop();
    groups = [...groups, ...new Array(8 - groups.length - after.length - tail.length).fill(0), ...after];
  } else if (v4) groups.pop();
  groups = [...groups, ...tail];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** The text form of 4 or 16 address bytes (IPv6 compressed as RFC 5952 says). */
export function ipToString(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join(".");
  if (bytes.length !== 16) throw new Error(`${bytes.length} address bytes`);
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

export function ipToBigInt(ip: string): bigint {
  return BigInt(`0x${ipToBytes(ip).toString("hex")}`);
}

// ---------------------------------------------------------------------------------------
// Packets

export const ICMP = 1;
export const TCP = 6;
export const UDP = 17;
export const ICMPV6 = 58;

/** The Internet checksum (RFC 1071) of the concatenated buffers. */
export function internetChecksum(...parts: Buffer[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** The pseudo-header of UDP, TCP and ICMPv6 checksums (RFC 768, RFC 8200 §8.1). */
function pseudoHeader(src: string, dst: string, protocol: number, length: number): Buffer {
  const s = ipToBytes(src);
  const d = ipToBytes(dst);
  if (s.length === 4) {
    const tail = Buffer.alloc(4);
    tail[1] = protocol;
    tail.writeUInt16BE(length, 2);
    return Buffer.concat([s, d, tail]);
  }
  const tail = Buffer.alloc(8);
  tail.writeUInt32BE(length, 0);
  tail[7] = protocol;
  return Buffer.concat([s, d, tail]);
}

export interface IpOptions {
  src: string;
  dst: string;
  /** TTL or hop limit (64). */
  ttl?: number;
}

/** An IPv4 (DF set, unless `moreFragments`) or IPv6 packet around `payload`, by the
 * family of `src`. */
export function ipPacket(o: IpOptions & { protocol: number; payload: Buffer; moreFragments?: boolean }): Buffer {
  const src = ipToBytes(o.src);
  const dst = ipToBytes(o.dst);
  if (src.length !== dst.length) throw new Error(`${o.src} and ${o.dst} are not of one family`);
  const ttl = o.ttl ?? 64;
  if (src.length === 4) {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(20 + o.payload.length, 2);
    h.writeUInt16BE(0x1234, 4);
    h.writeUInt16BE(o.moreFragments ? 0x2000 : 0x4000, 6);
    h[8] = ttl;
    h[9] = o.protocol;
    src.copy(h, 12);
    dst.copy(h, 16);
    h.writeUInt16BE(internetChecksum(h), 10);
    return Buffer.concat([h, o.payload]);
  }
  const h = Buffer.alloc(40);
  h.writeUInt32BE(6 << 28, 0);
  h.writeUInt16BE(o.payload.length, 4);
  h[6] = o.protocol;
  h[7] = ttl;
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([h, o.payload]);
}

/** A UDP packet with a valid checksum (unless `badChecksum`). */
export function udpPacket(o: IpOptions & { srcPort: number; dstPort: number; payload: Buffer; badChecksum?: boolean; noChecksum?: boolean }): Buffer {
  const udp = Buffer.alloc(8 + o.payload.length);
  udp.writeUInt16BE(o.srcPort, 0);
  udp.writeUInt16BE(o.dstPort, 2);
  udp.writeUInt16BE(udp.length, 4);
  o.payload.copy(udp, 8);
  const sum = internetChecksum(pseudoHeader(o.src, o.dst, UDP, udp.length), udp) || 0xffff;
  udp.writeUInt16BE(o.noChecksum ? 0 : o.badChecksum ? sum ^ 0x5a5a : sum, 6);
  return ipPacket({ ...o, protocol: UDP, payload: udp });
}

/** An ICMP (IPv4) or ICMPv6 echo request. */
export function icmpEchoRequest(o: IpOptions & { id: number; seq: number; data: Buffer }): Buffer {
  const v4 = isIPv4(o.src);
  const msg = Buffer.alloc(8 + o.data.length);
  msg[0] = v4 ? 8 : 128;
  msg.writeUInt16BE(o.id, 4);
  msg.writeUInt16BE(o.seq, 6);
  o.data.copy(msg, 8);
  const sum = v4 ? internetChecksum(msg) : internetChecksum(pseudoHeader(o.src, o.dst, ICMPV6, msg.length), msg);
  msg.writeUInt16BE(sum, 2);
  return ipPacket({ ...o, protocol: v4 ? ICMP : ICMPV6, payload: msg });
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** A TCP segment without options, checksummed. */
export function tcpSegment(
  o: IpOptions & { srcPort: number; dstPort: number; seq: number; ack?: number; flags: number; data?: Buffer; window?: number },
): Buffer {
  const data = o.data ?? Buffer.alloc(0);
  const tcp = Buffer.alloc(20 + data.length);
  tcp.writeUInt16BE(o.srcPort, 0);
  tcp.writeUInt16BE(o.dstPort, 2);
  tcp.writeUInt32BE(o.seq >>> 0, 4);
  tcp.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  tcp[12] = 5 << 4;
  tcp[13] = o.flags;
  tcp.writeUInt16BE(o.window ?? 65535, 14);
  data.copy(tcp, 20);
  tcp.writeUInt16BE(internetChecksum(pseudoHeader(o.src, o.dst, TCP, tcp.length), tcp), 16);
  return ipPacket({ ...o, protocol: TCP, payload: tcp });
}

/** What a packet from the proxy says, and everything about it that does not check. */
export interface ParsedPacket {
  version: 4 | 6;
  src: string;
  dst: string;
  protocol: number;
  ttl: number;
  /** The upper-layer bytes. */
  payload: Buffer;
  /** Failed checks (header checksum, lengths, UDP/ICMP checksums); empty when fine. */
  errors: string[];
  udp?: { srcPort: number; dstPort: number; data: Buffer };
  /** ICMP or ICMPv6: type, code, the 4 bytes after the checksum, and the rest. */
  icmp?: { type: number; code: number; rest: Buffer; body: Buffer };
  tcp?: { srcPort: number; dstPort: number; seq: number; ack: number; flags: number; data: Buffer };
}

export function parsePacket(packet: Buffer): ParsedPacket {
  const errors: string[] = [];
  const version = packet[0] >> 4;
  let src: string, dst: string, protocol: number, ttl: number, payload: Buffer;
  if (version === 4) {
    const ihl = (packet[0] & 0x0f) * 4;
    if (ihl < 20 || packet.length < ihl) throw new Error(`short IPv4 header: ${packet.toString("hex")}`);
    const total = packet.readUInt16BE(2);
    if (total !== packet.length) errors.push(`IPv4 total length ${total}, packet ${packet.length}`);
    if (internetChecksum(packet.subarray(0, ihl)) !== 0) errors.push("IPv4 header checksum");
    ttl = packet[8];
    protocol = packet[9];
    src = ipToString(packet.subarray(12, 16));
    dst = ipToString(packet.subarray(16, 20));
    payload = packet.subarray(ihl, Math.min(total, packet.length));
  } else if (version === 6) {
    if (packet.length < 40) throw new Error(`short IPv6 header: ${packet.toString("hex")}`);
    const length = packet.readUInt16BE(4);
    if (length + 40 !== packet.length) errors.push(`IPv6 payload length ${length}, packet ${packet.length}`);
    protocol = packet[6];
    ttl = packet[7];
    src = ipToString(packet.subarray(8, 24));
    dst = ipToString(packet.subarray(24, 40));
    payload = packet.subarray(40, 40 + length);
  } else {
    throw new Error(`IP version ${version}: ${packet.toString("hex")}`);
  }
  const parsed: ParsedPacket = { version, src, dst, protocol, ttl, payload, errors };
  if (protocol === UDP && payload.length >= 8) {
    if (payload.readUInt16BE(4) !== payload.length) errors.push(`UDP length ${payload.readUInt16BE(4)}, datagram ${payload.length}`);
    const sum = payload.readUInt16BE(6);
    if (sum === 0 && version === 6) errors.push("UDP checksum 0 on IPv6");
    if (sum !== 0 && internetChecksum(pseudoHeader(src, dst, UDP, payload.length), payload) !== 0) errors.push("UDP checksum");
    parsed.udp = { srcPort: payload.readUInt16BE(0), dstPort: payload.readUInt16BE(2), data: payload.subarray(8) };
  } else if ((protocol === ICMP || protocol === ICMPV6) && payload.length >= 8) {
    const ok = protocol === ICMP ? internetChecksum(payload) === 0 : internetChecksum(pseudoHeader(src, dst, ICMPV6, payload.length), payload) === 0;
    if (!ok) errors.push("ICMP checksum");
    parsed.icmp = { type: payload[0], code: payload[1], rest: payload.subarray(4, 8), body: payload.subarray(8) };
  } else if (protocol === TCP && payload.length >= 20) {
    if (internetChecksum(pseudoHeader(src, dst, TCP, payload.length), payload) !== 0) errors.push("TCP checksum");
    const offset = (payload[12] >> 4) * 4;
    parsed.tcp = {
      srcPort: payload.readUInt16BE(0),
      dstPort: payload.readUInt16BE(2),
      seq: payload.readUInt32BE(4),
      ack: payload.readUInt32BE(8),
      flags: payload[13],
      data: payload.subarray(offset),
    };
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------
// HTTP/2 and HTTP/1.1 clients

export const DEFAULT_TEMPLATE = "/.well-known/masque/ip/{target}/{ipproto}/";

/** The request path for a scope: `{target}` and `{ipproto}` expanded as RFC 6570 simple
 * strings (`/` and `:` percent-encoded). */
export function scopePath(target = "*", ipproto = "*", template = DEFAULT_TEMPLATE): string {
  const enc = (v: string) => encodeURIComponent(v).replace(/[!'()]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return template.replace("{target}", enc(target)).replace("{ipproto}", enc(ipproto));
}

export interface ConnectIpOptions {
  over: "h2" | "h1";
  port: number;
  /** TLS with this CA (SNI localhost); without it, h2c prior knowledge or plain HTTP/1.1. */
  ca?: string;
  path?: string;
  headers?: Record<string, string>;
  /** Capsules sent right behind the request, before the response (RFC 9484 §4: clients
   * may send optimistically). */
  early?: Buffer;
}

/** One CONNECT-IP request stream over HTTP/2 or HTTP/1.1. */
export class ConnectIpStream {
  status = 0;
  /** Response headers, lower-case names. */
  headers: Record<string, string> = {};
  /** The body of a refusal. */
  body = "";
  /** Every capsule received, in order. */
  readonly capsules: Capsule[] = [];
  /** IP packets from DATAGRAM capsules (context ID 0) not yet taken. */
  readonly packets: Buffer[] = [];
  /** Packets that came in DATAGRAM capsules with another context ID. */
  otherContext = 0;
  /** Set when the proxy has ended (or reset) the stream. */
  ended = false;
  /** The client's TCP port: Oxy's audit records name the client as 127.0.0.1:port. */
  localPort = 0;
  /** HTTP/2: the RST_STREAM error code the stream closed with (0: a clean close). */
  rstCode?: number;
  private parser = new CapsuleParser();
  private waiters = new Set<() => void>();

  constructor(
    private readonly writeFn: (data: Buffer) => void,
    private readonly endFn: () => void,
    private readonly destroyFn: () => void,
    private readonly resetFn: () => void = destroyFn,
  ) {}

  /** Bytes from the proxy after the response head. */
  onData(data: Buffer): void {
    if (this.status >= 200 && this.status < 300 || this.status === 101) {
      for (const capsule of this.parser.push(data)) {
        this.capsules.push(capsule);
        if (capsule.type === DATAGRAM) {
          const ctx = decodeVarint(capsule.value, 0);
          if (ctx && ctx[0] === 0) this.packets.push(capsule.value.subarray(ctx[1]));
          else this.otherContext++;
        }
      }
    } else {
      this.body += data.toString();
    }
    this.wake();
  }

  onEnd(): void {
    this.ended = true;
    this.wake();
  }

  private wake() {
    for (const w of this.waiters) w();
  }

  /** Waits until `check` returns something other than undefined, or throws after
   * `timeoutMs`. */
  async waitFor<T>(check: () => T | undefined, what: string, timeoutMs = 5_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = check();
      if (value !== undefined) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; capsules: ${this.describe()}`);
      await new Promise<void>((ok) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          ok();
        };
        const timer = setTimeout(done, left);
        this.waiters.add(done);
      });
    }
  }

  /** A short description of what came so far, for messages. */
  describe(): string {
    return JSON.stringify({
      status: this.status,
      ended: this.ended,
      capsules: this.capsules.map((c) => [c.type, c.value.length]),
      packets: this.packets.map((p) => {
        try {
          const x = parsePacket(p);
          return { src: x.src, dst: x.dst, protocol: x.protocol, icmp: x.icmp && [x.icmp.type, x.icmp.code], errors: x.errors };
        } catch (e) {
          return String(e);
        }
      }),
    });
  }

  /** The ADDRESS_ASSIGN capsules received, parsed. */
  addressAssigns(): AddressEntry[][] {
    return this.capsules.filter((c) => c.type === ADDRESS_ASSIGN).map((c) => parseAddressEntries(c.value));
  }

  /** The ROUTE_ADVERTISEMENT capsules received, parsed. */
  routeAdvertisements(): IpRange[][] {
    return this.capsules.filter((c) => c.type === ROUTE_ADVERTISEMENT).map((c) => parseRoutes(c.value));
  }

  /** Waits for the first ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT. */
  async initial(timeoutMs = 5_000): Promise<{ assigned: AddressEntry[]; routes: IpRange[] }> {
    return this.waitFor(
      () => {
        const [assigned] = this.addressAssigns();
        const [routes] = this.routeAdvertisements();
        return assigned && routes ? { assigned, routes } : undefined;
      },
      "ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT",
      timeoutMs,
    );
  }

  /** The assigned address of `version` from the first ADDRESS_ASSIGN. */
  address(version: 4 | 6): string {
    const entry = this.addressAssigns()[0]?.find((e) => e.version === version);
    if (!entry) throw new Error(`no IPv${version} address assigned: ${this.describe()}`);
    return entry.address;
  }

  /** Takes the first packet matching `match` (waiting for it). */
  async nextPacket(match: (p: ParsedPacket) => boolean, what: string, timeoutMs = 5_000): Promise<ParsedPacket> {
    return this.waitFor(
      () => {
        for (let i = 0; i < this.packets.length; i++) {
          const parsed = parsePacket(this.packets[i]);
          if (match(parsed)) {
            this.packets.splice(i, 1);
            return parsed;
          }
        }
        return undefined;
      },
      what,
      timeoutMs,
    );
  }

  write(data: Buffer): void {
    this.writeFn(data);
  }

  sendPacket(packet: Buffer): void {
    this.writeFn(datagramCapsule(packet));
  }

  sendCapsule(type: number, value: Buffer): void {
    this.writeFn(encodeCapsule(type, value));
  }

  /** Resolves when the proxy has ended the stream. */
  closed(timeoutMs = 5_000): Promise<true> {
    return this.waitFor(() => (this.ended ? true : undefined), "the proxy to end the stream", timeoutMs);
  }

  /** Ends the request stream (END_STREAM / FIN) and waits for the proxy to end its side. */
  async end(timeoutMs = 5_000): Promise<void> {
    this.endFn();
    try {
      await this.closed(timeoutMs);
    } finally {
      this.destroyFn();
    }
  }

  destroy(): void {
    this.destroyFn();
  }

  /** Abandons the stream: RST_STREAM (CANCEL) on HTTP/2, the connection kept; on
   * HTTP/1.1 the connection is destroyed. */
  reset(): void {
    this.resetFn();
  }
}

/** Opens a CONNECT-IP stream and waits for the response head. */
export async function openConnectIp(o: ConnectIpOptions): Promise<ConnectIpStream> {
  return o.over === "h2" ? openH2(o) : openH1(o);
}

async function openH2(o: ConnectIpOptions): Promise<ConnectIpStream> {
  const scheme = o.ca ? "https" : "http";
  const session: ClientHttp2Session = o.ca
    ? http2Connect(`https://localhost:${o.port}`, { ca: readFileSync(o.ca), servername: "localhost" })
    : http2Connect(`http://127.0.0.1:${o.port}`);
  session.on("error", () => {});
  await extendedConnectAllowed(session);
  const req: ClientHttp2Stream = session.request(
    {
      ":method": "CONNECT",
      ":protocol": "connect-ip",
      ":scheme": scheme,
      ":authority": `${o.ca ? "localhost" : "127.0.0.1"}:${o.port}`,
      ":path": o.path ?? scopePath(),
      "capsule-protocol": "?1",
      ...o.headers,
    },
    { endStream: false },
  );
  if (o.early) req.write(o.early);
  const stream = new ConnectIpStream(
    (data) => req.write(data),
    () => req.end(),
    () => {
      req.close();
      session.destroy();
    },
    () => req.close(http2constants.NGHTTP2_CANCEL),
  );
  stream.localPort = session.socket.localPort ?? 0;
  req.on("data", (d: Buffer) => stream.onData(d));
  req.on("end", () => stream.onEnd());
  req.on("close", () => {
    stream.rstCode = req.rstCode;
    stream.onEnd();
  });
  req.on("error", () => stream.onEnd());
  await new Promise<void>((ok, fail) => {
    req.once("response", (headers) => {
      stream.status = Number(headers[":status"]);
      for (const [k, v] of Object.entries(headers)) if (!k.startsWith(":")) stream.headers[k] = String(v);
      ok();
    });
    req.once("error", fail);
    req.once("close", () => fail(new Error(`stream closed without a response (${req.rstCode})`)));
  });
  return stream;
}

async function openH1(o: ConnectIpOptions): Promise<ConnectIpStream> {
  const host = o.ca ? "localhost" : "127.0.0.1";
  const socket: Socket = await new Promise((ok, fail) => {
    const s = o.ca
      ? tlsConnect({ port: o.port, host: "127.0.0.1", servername: "localhost", ca: readFileSync(o.ca), ALPNProtocols: ["http/1.1"] }, () => ok(s))
      : netConnect({ port: o.port, host: "127.0.0.1" }, () => ok(s));
    s.once("error", fail);
  });
  const extra = Object.entries(o.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  const head = `GET ${o.path ?? scopePath()} HTTP/1.1\r\nHost: ${host}:${o.port}\r\nConnection: Upgrade\r\nUpgrade: connect-ip\r\nCapsule-Protocol: ?1\r\n${extra}\r\n`;
  // In one write: the capsules may arrive with the request head.
  socket.write(Buffer.concat([Buffer.from(head), o.early ?? Buffer.alloc(0)]));
  const stream = new ConnectIpStream(
    (data) => socket.write(data),
    () => socket.end(),
    () => socket.destroy(),
  );
  stream.localPort = socket.localPort ?? 0;
  let received = Buffer.alloc(0);
  let answered = false;
  let bodyLeft = Infinity;
  await new Promise<void>((ok, fail) => {
    socket.on("data", (d: Buffer) => {
      if (answered) {
        if (stream.status !== 101 && Number.isFinite(bodyLeft)) {
          bodyLeft -= d.length;
          stream.onData(d);
          if (bodyLeft <= 0) stream.onEnd();
          return;
        }
        return stream.onData(d);
      }
      received = Buffer.concat([received, d]);
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      answered = true;
      const lines = received.subarray(0, end).toString().split("\r\n");
      stream.status = Number(lines[0].split(" ")[1]);
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        stream.headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      if (stream.status !== 101 && stream.headers["content-length"] !== undefined) bodyLeft = Number(stream.headers["content-length"]);
      ok();
      const rest = received.subarray(end + 4);
      if (rest.length) {
        if (Number.isFinite(bodyLeft)) bodyLeft -= rest.length;
        stream.onData(rest);
        if (bodyLeft <= 0) stream.onEnd();
      } else if (bodyLeft === 0) stream.onEnd();
    });
    socket.on("end", () => stream.onEnd());
    socket.on("close", () => {
      stream.onEnd();
      if (!answered) fail(new Error(`closed without a response: ${received}`));
    });
    socket.on("error", () => stream.onEnd());
  });
  return stream;
}

// ---------------------------------------------------------------------------------------
// The HTTP/3 client: interop/connect_ip_client.py (aioquic)

export interface ConnectIpInteropOptions {
  /** The proxy's UDP port on 127.0.0.1 (SNI and :authority say localhost). */
  port: number;
  ca: string;
  target?: string;
  ipproto?: string;
  count?: number;
  size?: number;
  timeout?: number;
  addressRequest?: boolean;
  spoof?: string;
  udp?: string[];
  ping?: string[];
  deny?: string[];
  malformed?: "request-id-zero" | "unordered-routes" | "too-large";
  maxCapsule?: number;
  /** Send packets as DATAGRAM capsules on the stream rather than as HTTP Datagrams. */
  capsules?: boolean;
  /** End the request stream at the end (reports `proxy_ended_stream`). */
  closeStream?: boolean;
}

export interface ConnectIpInteropResult {
  status: number;
  body?: string;
  /** The client's UDP port: Oxy's audit records name the client as 127.0.0.1:port. */
  local_port: number;
  capsule_protocol?: string;
  assigned?: { id: number; version: 4 | 6; address: string; prefix: number }[];
  routes?: { version: 4 | 6; start: string; end: string; protocol: number }[];
  address_answer?: { id: number; version: 4 | 6; address: string; prefix: number }[];
  /** `via`: how the echoes came, as HTTP Datagrams or in DATAGRAM capsules. */
  udp?: { target: string; sent: number; received: number; errors: string[]; via: { datagram: number; capsule: number } }[];
  ping?: { target: string; sent: number; received: number; errors: string[] }[];
  deny?: { target: string; answered: boolean; type?: number; code?: number; from?: string; to?: string; errors?: string[]; quote_matches?: boolean; quoted_bytes?: number; via?: string }[];
  malformed?: { kind: string; stream_closed: boolean; reset: number | null };
  proxy_ended_stream?: boolean;
  other_capsules?: number[];
  unparsable?: number;
  unexpected_packets?: any[];
  /** The client's log (stderr), for assertion messages. */
  log: string;
}

/** Runs connect_ip_client.py; its JSON line and log. Throws if it exits non-zero. */
export function connectIpInterop(o: ConnectIpInteropOptions, timeoutMs = 30_000): Promise<ConnectIpInteropResult> {
  const args = [join(repoRoot, "integration-tests", "interop", "connect_ip_client.py"), "--proxy", `127.0.0.1:${o.port}`, "--ca", o.ca];
  const add = (flag: string, value: unknown) => value !== undefined && args.push(flag, String(value));
  add("--target", o.target);
  add("--ipproto", o.ipproto);
  add("--count", o.count);
  add("--size", o.size);
  add("--timeout", o.timeout);
  add("--spoof", o.spoof);
  add("--malformed", o.malformed);
  add("--max-capsule", o.maxCapsule);
  if (o.addressRequest) args.push("--address-request");
  if (o.capsules) args.push("--capsules");
  if (o.closeStream) args.push("--close-stream");
  for (const t of o.udp ?? []) args.push("--udp", t);
  for (const t of o.ping ?? []) args.push("--ping", t);
  for (const t of o.deny ?? []) args.push("--deny", t);
  return runInteropScript(args, timeoutMs);
}

export { until } from "./oxy.ts";
