// CONNECT-IP (RFC 9484): IP proxying over HTTP/3 (aioquic, interop/connect_ip_client.py),
// HTTP/2 and HTTP/1.1 (lib/connect-ip.ts), with packets built and checked by hand:
// ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT, ADDRESS_REQUEST, UDP and ICMP echo round trips
// over IPv4 and IPv6, TCP through the user-space stack, spoofed sources, denied and
// out-of-scope destinations, TTL and MTU errors, malformed capsules, address pools, audit
// records, metrics, and refusals (405, 400, 407, 503).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { auditPath, auditWhere } from "../lib/audit.ts";
import { makeInterceptionCa, makePki, type TestPki } from "../lib/certs.ts";
import {
  ADDRESS_ASSIGN,
  ADDRESS_REQUEST,
  ROUTE_ADVERTISEMENT,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  UDP,
  connectIpInterop,
  datagramCapsule,
  encodeAddressEntries,
  encodeCapsule,
  encodeRoutes,
  encodeVarint,
  icmpEchoRequest,
  ipPacket,
  ipToBytes,
  openConnectIp,
  routeCovers,
  parsePacket,
  routesOrdered,
  scopePath,
  tcpSegment,
  udpPacket,
  until,
  type ConnectIpOptions,
  type ConnectIpStream,
  type IpRange,
  type ParsedPacket,
} from "../lib/connect-ip.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { refusingTcpPort } from "../lib/closed-ports.ts";
import { OxyProcess, repoRoot } from "../lib/oxy.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";

let pki: TestPki;
/** UDP echo servers on 127.0.0.1 and ::1 (allowed), and on 127.0.0.2 (denied: egress.allow
 * covers 127.0.0.1/32 only). */
let echo4: UdpEcho;
let echo6: UdpEcho;
let deniedEcho: UdpEcho;
let tcpEcho: EchoServer;
/** Names for host-name scopes: echo.test is 127.0.0.1 and ::1. */
let dns: DnsServer;
let oxy: OxyProcess;
let audit: string;
const port: Record<string, number> = {};

// ---------------------------------------------------------------------------------------
// helpers

/** A counter or gauge sample, 0 when it does not exist yet. */
async function counter(sample: string): Promise<number> {
  return (await oxy.metric(sample)) ?? 0;
}

/** Waits until a counter sample reaches at least `value`; returns it. */
async function counterReaches(sample: string, value: number): Promise<number> {
  let last = 0;
  try {
    return await until(async () => ((last = await counter(sample)) >= value ? last : undefined), `${sample} >= ${value}`);
  } catch {
    throw new Error(`${sample} is ${last}, wanted at least ${value}`);
  }
}

const ip4 = "ipv4";
const ip6 = "ipv6";
const inUse = (endpoint: string, family: string) => `oxy_ip_addresses_in_use{endpoint="${endpoint}",family="${family}"}`;
const dropped = (endpoint: string, reason: string) => `oxy_ip_dropped_total{endpoint="${endpoint}",reason="${reason}"}`;
const icmpGenerated = (endpoint: string, kind: string) => `oxy_ip_icmp_generated_total{endpoint="${endpoint}",kind="${kind}"}`;
/** Every `oxy_ip_icmp_generated_total` sample of `endpoint`, summed over its kinds. */
async function icmpGeneratedTotal(endpoint: string): Promise<number> {
  const metrics = (await oxy.telemetry("/metrics")).body;
  const samples = [...metrics.matchAll(/^oxy_ip_icmp_generated_total\{([^}]*)\} (\S+)$/gm)];
  return samples.filter((m) => m[1].includes(`endpoint="${endpoint}"`)).reduce((n, m) => n + Number(m[2]), 0);
}
const capsuleErrors = (endpoint: string, reason: string) => `oxy_ip_capsule_errors_total{endpoint="${endpoint}",reason="${reason}"}`;
const httpErrors = (endpoint: string, reason: string) => `oxy_http_errors_total{endpoint="${endpoint}",reason="${reason}"}`;

/** The transports a plain test runs over: HTTP/2 and HTTP/1.1, over TLS on the HTTP/3
 * endpoint and in the clear (h2c prior knowledge, plain HTTP/1.1). */
function transports(): Record<string, ConnectIpOptions> {
  return {
    "h2 over TLS": { over: "h2", port: port.h3, ca: pki.ca },
    "HTTP/1.1 over TLS": { over: "h1", port: port.h3, ca: pki.ca },
    h2c: { over: "h2", port: port.clear },
    "HTTP/1.1 in the clear": { over: "h1", port: port.clear },
  };
}

/** Opens a CONNECT-IP stream that must succeed; checks the response head. */
async function open(o: ConnectIpOptions): Promise<ConnectIpStream> {
  const s = await openConnectIp(o);
  const ok = o.over === "h1" ? 101 : 200;
  assert.equal(s.status, ok, `${s.status}: ${s.body}`);
  assert.equal(s.headers["capsule-protocol"], "?1", JSON.stringify(s.headers));
  if (o.over === "h1") assert.match(s.headers["upgrade"] ?? "", /^connect-ip$/i, JSON.stringify(s.headers));
  return s;
}

/** Opens a stream that must be refused; returns the status and body once it ended. */
async function refused(o: ConnectIpOptions): Promise<{ status: number; body: string; headers: Record<string, string> }> {
  const s = await openConnectIp(o);
  try {
    await s.closed();
  } finally {
    s.destroy();
  }
  return { status: s.status, body: s.body, headers: s.headers };
}

/** Sends `count` UDP packets from the assigned address of dst's family, one at a time,
 * and checks each echo: addresses and ports swapped, payload intact, checksums valid. */
async function udpRoundTrips(s: ConnectIpStream, dst: string, dstPort: number, srcPort: number, count = 3): Promise<void> {
  const src = s.address(dst.includes(":") ? 6 : 4);
  for (let i = 0; i < count; i++) {
    const payload = Buffer.concat([Buffer.from(`udp ${srcPort} ${i} `), randomBytes(40)]);
    s.sendPacket(udpPacket({ src, dst, srcPort, dstPort, payload }));
    const reply = await s.nextPacket((p) => p.udp?.dstPort === srcPort && p.udp.data.equals(payload), `the echo of UDP ${i} to ${dst}:${dstPort}`);
    assert.deepEqual(reply.errors, [], "the reply's IP header and UDP checksum are valid");
    assert.deepEqual([reply.src, reply.dst, reply.udp?.srcPort], [dst, src, dstPort]);
    assert.ok(reply.ttl > 0);
  }
}

/** Sends a packet and waits for the ICMP error about it; checks where it comes from, its
 * checksum and that it quotes the packet. */
async function icmpErrorFor(s: ConnectIpStream, packet: Buffer, what: string): Promise<ParsedPacket> {
  const v4 = packet[0] >> 4 === 4;
  const header = packet.subarray(0, v4 ? 20 : 40);
  s.sendPacket(packet);
  const error = await s.nextPacket((p) => p.icmp !== undefined && p.icmp.body.subarray(0, header.length).equals(header), `an ICMP error about ${what}`);
  assert.deepEqual(error.errors, [], "the ICMP error's checksums are valid");
  assert.ok(packet.subarray(0, error.icmp!.body.length).equals(error.icmp!.body), "the error quotes the start of the packet");
  // From the packet's destination, to its source.
  const dst = v4 ? packet.subarray(16, 20) : packet.subarray(24, 40);
  const src = v4 ? packet.subarray(12, 16) : packet.subarray(8, 24);
  assert.deepEqual([ipToBytes(error.src), ipToBytes(error.dst)], [dst, src]);
  return error;
}

/** Checks the routes of a `*` scope: ordered, non-overlapping, any protocol; the
 * internet and the egress.allow addresses in, the special-purpose ranges out. */
function assertWildcardRoutes(routes: IpRange[], families: (4 | 6)[]) {
  assert.ok(routesOrdered(routes), JSON.stringify(routes));
  assert.deepEqual([...new Set(routes.map((r) => r.version))], families);
  assert.ok(routes.every((r) => r.protocol === 0), JSON.stringify(routes));
  const inside = ["127.0.0.1", "1.1.1.1", "8.8.8.8", "223.255.255.255"];
  const outside = ["127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.1.1", "192.0.2.1", "100.64.0.1", "169.254.1.1", "224.0.0.1", "0.0.0.0"];
  const inside6 = ["::1", "2606:4700::1", "2a00:1450::1"];
  const outside6 = ["2001:db8::1", "fd00::1", "fe80::1", "ff02::1", "::"];
  if (families.includes(4)) {
    for (const ip of inside) assert.ok(routeCovers(routes, ip), `${ip} is routed: ${JSON.stringify(routes)}`);
    for (const ip of outside) assert.ok(!routeCovers(routes, ip), `${ip} is not routed: ${JSON.stringify(routes)}`);
  }
  if (families.includes(6)) {
    for (const ip of inside6) assert.ok(routeCovers(routes, ip), `${ip} is routed: ${JSON.stringify(routes)}`);
    for (const ip of outside6) assert.ok(!routeCovers(routes, ip), `${ip} is not routed: ${JSON.stringify(routes)}`);
  }
}

/** Waits for every pool address of `endpoint` to be back. */
async function poolsEmpty(endpoint: string, families = [ip4, ip6]) {
  for (const family of families) await oxy.waitForMetric(inUse(endpoint, family), 0);
}

// ---------------------------------------------------------------------------------------

describe("CONNECT-IP (RFC 9484)", () => {
  before(async () => {
    pki = makePki();
    [echo4, echo6, deniedEcho, tcpEcho, dns] = await Promise.all([
      startUdpEcho("127.0.0.1"),
      startUdpEcho("::1"),
      startUdpEcho("127.0.0.2"),
      startEchoServer(),
      startDnsServer({ "echo.test": ["127.0.0.1", "::1"] }),
    ]);
    audit = auditPath();
    const tls = { enabled: true, certificates: [pki.server] };
    const connect_ip = { enabled: true };
    oxy = await OxyProcess.start({
      binary: "oxy",
      settings: {
        egress: { allow: ["127.0.0.1/32", "::1/128"] },
        // Bounds the stop in `after` should a test leave a connection open.
        server: { shutdown_timeout: "3s" },
        dns: { hosts_file: false, groups: [{ servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
        telemetry: { audit: { path: audit } },
        endpoints: [
          { name: "h3", listen: ["127.0.0.1:0"], tls, http: { connect_ip, h3: { enabled: true } } },
          { name: "clear", listen: ["127.0.0.1:0"], http: { connect_ip } },
          { name: "mtu", listen: ["127.0.0.1:0"], http: { connect_ip }, ip: { mtu: 1300 } },
          { name: "small", listen: ["127.0.0.1:0"], http: { connect_ip }, ip: { ipv4_pool: "100.64.0.0/30", ipv6_pool: null } },
          { name: "raw", listen: ["127.0.0.1:0"], http: { connect_ip: { enabled: true, max_capsule_bytes: 1600 } } },
          { name: "flows", listen: ["127.0.0.1:0"], http: { connect_ip }, ip: { flow_idle_timeout: "2s", max_flows: 1 } },
          {
            name: "auth",
            listen: ["127.0.0.1:0"],
            http: { connect_ip, proxy_auth: { enabled: true, realm: "ip", users: [{ name: "alice", password: "s3cret" }] } },
          },
          { name: "off", listen: ["127.0.0.1:0"], tls, http: { connect_ip: { enabled: false }, h3: { enabled: true } } },
        ],
      },
    });
    for (const endpoint of oxy.endpoints()) port[endpoint.name] = oxy.port(endpoint.name, "tcp");
  });

  after(async () => {
    const stop = await oxy?.stop();
    await Promise.all([echo4?.close(), echo6?.close(), deniedEcho?.close(), tcpEcho?.close(), dns?.close()]);
    assert.deepEqual(stop, { code: 0, signal: null }, oxy?.logs());
  });

  // ---------------------------------------------------------------------------------------
  // HTTP/3 with an independent client

  test("HTTP/3 (aioquic): addresses, routes, ADDRESS_REQUEST, UDP and ICMP echo over IPv4 and IPv6, denied destinations", async () => {
    await poolsEmpty("h3");
    const echoedBefore = echo4.received.length;
    const r = await connectIpInterop({
      port: port.h3,
      ca: pki.ca,
      addressRequest: true,
      udp: [`127.0.0.1:${echo4.port}`, `[::1]:${echo6.port}`],
      ping: ["127.0.0.1", "::1"],
      deny: [`127.0.0.2:${deniedEcho.port}`, "10.1.2.3:53", "192.0.2.1:53", "[2001:db8::1]:53"],
      count: 3,
    });
    assert.equal(r.status, 200, r.log);
    assert.equal(r.capsule_protocol, "?1");
    // One IPv4 /32 and one IPv6 /128 from the default pools, under request ID 0.
    assert.deepEqual(r.assigned, [
      { id: 0, version: 4, address: "100.64.0.1", prefix: 32 },
      { id: 0, version: 6, address: "fd00:6f78::1", prefix: 128 },
    ]);
    assertWildcardRoutes(r.routes!, [4, 6]);
    // Every assigned address, each under the ID of the request it satisfies; the request
    // for 192.0.2.77 (not Oxy's to give) answered with 0.0.0.0/32 under its ID.
    assert.deepEqual(r.address_answer, [
      { id: 1, version: 4, address: "100.64.0.1", prefix: 32 },
      { id: 2, version: 6, address: "fd00:6f78::1", prefix: 128 },
      { id: 3, version: 4, address: "0.0.0.0", prefix: 32 },
    ]);
    // Small packets come back as HTTP Datagrams.
    const datagrams = { datagram: 3, capsule: 0 };
    assert.deepEqual(r.udp, [
      { target: `127.0.0.1:${echo4.port}`, sent: 3, received: 3, errors: [], via: datagrams },
      { target: `[::1]:${echo6.port}`, sent: 3, received: 3, errors: [], via: datagrams },
    ]);
    assert.deepEqual(r.ping, [
      { target: "127.0.0.1", sent: 3, received: 3, errors: [] },
      { target: "::1", sent: 3, received: 3, errors: [] },
    ]);
    const prohibited = (target: string, from: string, [type, code]: number[], to = "100.64.0.1") => ({
      target,
      answered: true,
      type,
      code,
      from,
      to,
      errors: [],
      quote_matches: true,
    });
    assert.deepEqual(
      r.deny!.map(({ quoted_bytes, via, ...rest }) => rest),
      [
        prohibited(`127.0.0.2:${deniedEcho.port}`, "127.0.0.2", [3, 13]),
        prohibited("10.1.2.3:53", "10.1.2.3", [3, 13]),
        prohibited("192.0.2.1:53", "192.0.2.1", [3, 13]),
        prohibited("[2001:db8::1]:53", "2001:db8::1", [1, 1], "fd00:6f78::1"),
      ],
      r.log,
    );
    for (const d of r.deny!) assert.ok(d.quoted_bytes! >= 28, JSON.stringify(d));
    assert.deepEqual([r.unparsable, r.other_capsules, r.unexpected_packets], [0, [], []]);
    assert.equal(deniedEcho.received.length, 0, "nothing reached the denied destination");
    assert.equal(echo4.received.length - echoedBefore, 3);

    // The stream's audit record, one per IP flow, and the UDP tunnels' own.
    const mine = (x: any) => x.endpoint === "h3" && x.client === `127.0.0.1:${r.local_port}`;
    const [session] = await auditWhere(audit, (x) => mine(x) && x.protocol === "connect-ip", 1);
    assert.equal(session.target, "/.well-known/masque/ip/*/*/");
    assert.equal(session.close_reason, "completed");
    assert.match(session.client, /^127\.0\.0\.1:\d+$/);
    // Up: 6 UDP, 6 echo requests, 4 denied; down: 6 UDP, 6 echo replies, 4 ICMP errors.
    assert.deepEqual([session.packets_up, session.packets_down], [16, 16], JSON.stringify(session));
    const flows = await auditWhere(audit, (x) => mine(x) && x.protocol === "ip", 8);
    const tuples = flows.map((f) => `${f.flow.protocol} ${f.flow.source} ${f.flow.destination}`).sort();
    assert.deepEqual(
      tuples,
      [
        `1 100.64.0.1:${0x1234} 127.0.0.1:0`,
        `17 100.64.0.1:40000 127.0.0.1:${echo4.port}`,
        `17 100.64.0.1:41000 10.1.2.3:53`,
        `17 100.64.0.1:41000 127.0.0.2:${deniedEcho.port}`,
        `17 100.64.0.1:41000 192.0.2.1:53`,
        `17 [fd00:6f78::1]:40001 [::1]:${echo6.port}`,
        `17 [fd00:6f78::1]:41000 [2001:db8::1]:53`,
        `58 [fd00:6f78::1]:${0x1234} [::1]:0`,
      ].sort(),
    );
    const echoFlow = flows.find((f) => f.flow.destination === `127.0.0.1:${echo4.port}`);
    assert.deepEqual([echoFlow.packets_up, echoFlow.packets_down, echoFlow.target], [3, 3, `127.0.0.1:${echo4.port}`]);
    const udp = await auditWhere(audit, (x) => mine(x) && x.protocol === "udp", 6);
    const byTarget = Object.fromEntries(udp.map((u) => [u.target, u]));
    assert.equal(byTarget[`127.0.0.1:${echo4.port}`].resolved, `127.0.0.1:${echo4.port}`);
    assert.deepEqual([byTarget[`127.0.0.1:${echo4.port}`].packets_up, byTarget[`127.0.0.1:${echo4.port}`].packets_down], [3, 3]);
    assert.equal(byTarget[`[::1]:${echo6.port}`].resolved, `[::1]:${echo6.port}`);
    assert.match(byTarget[`127.0.0.2:${deniedEcho.port}`].close_reason, /egress denied: 127\.0\.0\.2 is a loopback address/);
    assert.match(byTarget["10.1.2.3:53"].close_reason, /egress denied: 10\.1\.2\.3 is a private address/);
    assert.match(byTarget["192.0.2.1:53"].close_reason, /egress denied: 192\.0\.2\.1 is a documentation address/);

    assert.ok((await counter('oxy_ip_flows_total{action="forward",endpoint="h3",protocol="udp"}')) >= 6);
    assert.ok((await counter('oxy_ip_flows_total{action="forward",endpoint="h3",protocol="icmp"}')) >= 1);
    assert.ok((await counter('oxy_ip_flows_total{action="forward",endpoint="h3",protocol="icmpv6"}')) >= 1);
    assert.ok((await counter(icmpGenerated("h3", "prohibited"))) >= 4);
    assert.ok((await counter('oxy_ip_packets_total{direction="up",endpoint="h3"}')) >= 16);
    assert.ok((await counter('oxy_ip_packets_total{direction="down",endpoint="h3"}')) >= 16);
    assert.ok((await counter('oxy_http_requests_total{endpoint="h3",method="CONNECT",status="200",version="3"}')) >= 1);
    await poolsEmpty("h3");
  });

  test("HTTP/3 (aioquic): packets in DATAGRAM capsules on the stream; a reply too big for a QUIC datagram comes back in a capsule", async () => {
    // Small packets sent in capsules are carried; their replies fit HTTP Datagrams.
    const small = await connectIpInterop({ port: port.h3, ca: pki.ca, capsules: true, udp: [`127.0.0.1:${echo4.port}`], count: 3 });
    assert.deepEqual(small.udp, [{ target: `127.0.0.1:${echo4.port}`, sent: 3, received: 3, errors: [], via: { datagram: 3, capsule: 0 } }], small.log);
    // 1500-byte packets (the link MTU) do not fit a QUIC datagram either way.
    const big = await connectIpInterop({ port: port.h3, ca: pki.ca, capsules: true, udp: [`127.0.0.1:${echo4.port}`, `[::1]:${echo6.port}`], size: 1452, count: 3 });
    assert.deepEqual(
      big.udp,
      [
        { target: `127.0.0.1:${echo4.port}`, sent: 3, received: 3, errors: [], via: { datagram: 0, capsule: 3 } },
        { target: `[::1]:${echo6.port}`, sent: 3, received: 3, errors: [], via: { datagram: 0, capsule: 3 } },
      ],
      big.log,
    );
    assert.ok(echo4.received.slice(-3).every((d) => d.length === 1452));
    await poolsEmpty("h3");
  });

  test("HTTP/3 (aioquic): a spoofed source is dropped and counted; nothing reaches the target", async () => {
    const before = await counter(dropped("h3", "spoofed_source"));
    const r = await connectIpInterop({ port: port.h3, ca: pki.ca, spoof: `127.0.0.1:${echo4.port}`, udp: [`127.0.0.1:${echo4.port}`], count: 1, closeStream: true });
    assert.equal(r.status, 200, r.log);
    // The spoofed packet went first; the echo of the next one has come back.
    assert.equal(r.udp![0].received, 1, r.log);
    // The client ended the request stream (FIN) and Oxy ended its side, before the
    // connection closed.
    assert.equal(r.proxy_ended_stream, true, r.log);
    await counterReaches(dropped("h3", "spoofed_source"), before + 1);
    assert.ok(!echo4.received.some((d) => d.toString() === "spoofed"), "the spoofed packet was not forwarded");
  });

  test("HTTP/3 (aioquic): a malformed capsule ends the stream and is counted", async () => {
    for (const [kind, reason] of [
      ["request-id-zero", "bad_address_request"],
      ["unordered-routes", "unordered_routes"],
      ["too-large", "too_large"],
    ] as const) {
      const before = await counter(capsuleErrors("h3", reason));
      const r = await connectIpInterop({ port: port.h3, ca: pki.ca, malformed: kind, maxCapsule: 65552, timeout: 5 });
      assert.equal(r.status, 200, r.log);
      assert.equal(r.malformed?.stream_closed, true, `${kind}: ${r.log}`);
      await counterReaches(capsuleErrors("h3", reason), before + 1);
    }
    await poolsEmpty("h3");
  });

  test("HTTP/3 (aioquic): connect_ip disabled answers 405", async () => {
    const r = await connectIpInterop({ port: port.off, ca: pki.ca });
    assert.equal(r.status, 405, r.log);
    assert.match(r.body ?? "", /CONNECT-IP is not enabled/);
  });

  // ---------------------------------------------------------------------------------------
  // HTTP/2 and HTTP/1.1

  for (const name of ["h2 over TLS", "HTTP/1.1 over TLS", "h2c", "HTTP/1.1 in the clear"]) {
    test(`${name}: ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT, UDP echo over IPv4 and IPv6 in DATAGRAM capsules`, async () => {
      const options = transports()[name];
      const endpoint = options.port === port.h3 ? "h3" : "clear";
      await poolsEmpty(endpoint);
      const s = await open(options);
      const mine = (x: any) => x.endpoint === endpoint && x.client === `127.0.0.1:${s.localPort}`;
      try {
        const { assigned, routes } = await s.initial();
        assert.deepEqual(assigned, [
          { requestId: 0, version: 4, address: "100.64.0.1", prefixLength: 32 },
          { requestId: 0, version: 6, address: "fd00:6f78::1", prefixLength: 128 },
        ]);
        assertWildcardRoutes(routes, [4, 6]);
        assert.equal(await counter(inUse(endpoint, ip4)), 1);
        assert.equal(await counter(inUse(endpoint, ip6)), 1);
        await udpRoundTrips(s, "127.0.0.1", echo4.port, 40000);
        await udpRoundTrips(s, "::1", echo6.port, 40001);
        assert.deepEqual([s.otherContext, s.capsules.filter((c) => ![0, 1, 3].includes(c.type)).length], [0, 0]);
        await s.end();
      } finally {
        s.destroy();
      }
      await poolsEmpty(endpoint);
      const [record] = await auditWhere(audit, (x) => mine(x) && x.protocol === "connect-ip", 1);
      assert.deepEqual([record.target, record.close_reason, record.packets_up, record.packets_down], ["/.well-known/masque/ip/*/*/", "completed", 6, 6]);
      const flows = await auditWhere(audit, (x) => mine(x) && x.protocol === "ip", 2);
      assert.equal(flows.length, 2, JSON.stringify(flows));
      const tuple = (f: { protocol: number; source: string; destination: string }) => `${f.protocol} ${f.source} ${f.destination}`;
      assert.deepEqual(flows.map((f) => tuple(f.flow)).sort(), [
        `17 100.64.0.1:40000 127.0.0.1:${echo4.port}`,
        `17 [fd00:6f78::1]:40001 [::1]:${echo6.port}`,
      ].sort());
      for (const f of flows) assert.deepEqual([f.packets_up, f.packets_down, f.close_reason], [3, 3, "forward: completed"], JSON.stringify(f));
    });
  }

  test("h2: ADDRESS_REQUEST is answered with the assigned set under the requests' IDs", async () => {
    await poolsEmpty("clear");
    const s = await open({ over: "h2", port: port.clear });
    try {
      await s.initial();
      s.sendCapsule(
        ADDRESS_REQUEST,
        encodeAddressEntries([
          { requestId: 7, prefix: "::/128" },
          { requestId: 9, prefix: "100.64.0.1/32" },
          { requestId: 300, prefix: "2001:db8::5/128" },
        ]),
      );
      const answer = await s.waitFor(() => s.addressAssigns()[1], "the answering ADDRESS_ASSIGN");
      assert.deepEqual(answer, [
        { requestId: 9, version: 4, address: "100.64.0.1", prefixLength: 32 },
        { requestId: 7, version: 6, address: "fd00:6f78::1", prefixLength: 128 },
        { requestId: 300, version: 6, address: "::", prefixLength: 128 },
      ]);
      // Capsules of unknown types are skipped (RFC 9297 §3.2); addresses and routes the
      // client offers are accepted and ignored; the stream lives on.
      s.sendCapsule(0x2a, Buffer.from("an unknown capsule type"));
      s.sendCapsule(ADDRESS_ASSIGN, encodeAddressEntries([{ requestId: 0, prefix: "192.0.2.9/32" }]));
      s.sendCapsule(ROUTE_ADVERTISEMENT, encodeRoutes([{ start: "0.0.0.0", end: "255.255.255.255", protocol: 0 }]));
      await udpRoundTrips(s, "127.0.0.1", echo4.port, 40002, 1);
      await s.end();
    } finally {
      s.destroy();
    }
  });

  test("h2 and HTTP/1.1: capsules sent before the response (optimistically) are carried", async () => {
    for (const over of ["h2", "h1"] as const) {
      // The pool is empty: the stream will be given its first addresses.
      await poolsEmpty("clear");
      const payload = Buffer.from(`optimistic over ${over}`);
      const early = Buffer.concat([
        encodeCapsule(ADDRESS_REQUEST, encodeAddressEntries([{ requestId: 1, prefix: "0.0.0.0/32" }])),
        datagramCapsule(udpPacket({ src: "100.64.0.1", dst: "127.0.0.1", srcPort: 40400, dstPort: echo4.port, payload })),
      ]);
      const s = await open({ over, port: port.clear, early });
      try {
        assert.equal((await s.initial()).assigned[0].address, "100.64.0.1");
        const answer = await s.waitFor(() => s.addressAssigns()[1], "the answer to the early ADDRESS_REQUEST");
        assert.deepEqual(answer[0], { requestId: 1, version: 4, address: "100.64.0.1", prefixLength: 32 });
        const echoed = await s.nextPacket((p) => p.udp?.data.equals(payload) === true, "the echo of the early packet");
        assert.deepEqual(echoed.errors, []);
        await s.end();
      } finally {
        s.destroy();
      }
    }
  });

  test("h2: ICMP echo to 127.0.0.1 and ::1 comes back with the client's identifier", async () => {
    const s = await open({ over: "h2", port: port.clear });
    try {
      await s.initial();
      for (const [dst, version, reply] of [
        ["127.0.0.1", 4, 0],
        ["::1", 6, 129],
      ] as const) {
        const src = s.address(version);
        for (const seq of [1, 2]) {
          const data = randomBytes(56);
          s.sendPacket(icmpEchoRequest({ src, dst, id: 0xbeef, seq, data }));
          const p = await s.nextPacket((x) => x.icmp?.type === reply && x.icmp.rest.readUInt16BE(2) === seq, `echo reply ${seq} from ${dst}`);
          assert.deepEqual(p.errors, []);
          assert.deepEqual([p.src, p.dst, p.icmp!.code, p.icmp!.rest.readUInt16BE(0)], [dst, src, 0, 0xbeef]);
          assert.ok(p.icmp!.body.equals(data), "the echo data comes back");
        }
      }
      await s.end();
    } finally {
      s.destroy();
    }
  });

  test("h2: TCP through the user-space stack reaches a TCP echo server", async () => {
    const connections = tcpEcho.connections;
    const s = await open({ over: "h2", port: port.clear });
    const mine = (x: any) => x.endpoint === "clear" && x.client === `127.0.0.1:${s.localPort}`;
    try {
      await s.initial();
      const src = s.address(4);
      const tcp = { src, dst: "127.0.0.1", srcPort: 45000, dstPort: tcpEcho.port };
      const iss = 1_000_000;
      s.sendPacket(tcpSegment({ ...tcp, seq: iss, flags: TCP_SYN }));
      const synAck = await s.nextPacket((p) => p.tcp?.dstPort === 45000 && (p.tcp.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK), "SYN-ACK");
      assert.deepEqual(synAck.errors, [], "the SYN-ACK's checksums are valid");
      assert.deepEqual([synAck.src, synAck.dst, synAck.tcp!.srcPort, synAck.tcp!.ack], ["127.0.0.1", src, tcpEcho.port, iss + 1]);
      let ours = iss + 1;
      let theirs = (synAck.tcp!.seq + 1) >>> 0;
      const message = Buffer.from("hello through a user-space TCP stack\n");
      s.sendPacket(tcpSegment({ ...tcp, seq: ours, ack: theirs, flags: TCP_ACK | TCP_PSH, data: message }));
      ours += message.length;
      let echoed = Buffer.alloc(0);
      while (echoed.length < message.length) {
        const p = await s.nextPacket((x) => x.tcp?.dstPort === 45000 && x.tcp.data.length > 0, "echoed bytes");
        assert.deepEqual(p.errors, []);
        assert.equal(p.tcp!.seq, theirs);
        echoed = Buffer.concat([echoed, p.tcp!.data]);
        theirs = (theirs + p.tcp!.data.length) >>> 0;
        s.sendPacket(tcpSegment({ ...tcp, seq: ours, ack: theirs, flags: TCP_ACK }));
      }
      assert.equal(echoed.toString(), message.toString());
      assert.equal(tcpEcho.connections, connections + 1);
      // Close our side; the echo server closes its side in turn.
      s.sendPacket(tcpSegment({ ...tcp, seq: ours, ack: theirs, flags: TCP_ACK | TCP_FIN }));
      const fin = await s.nextPacket((x) => x.tcp?.dstPort === 45000 && (x.tcp.flags & TCP_FIN) !== 0, "the server's FIN");
      assert.equal(fin.tcp!.ack, ours + 1);
      s.sendPacket(tcpSegment({ ...tcp, seq: ours + 1, ack: (fin.tcp!.seq + 1) >>> 0, flags: TCP_ACK }));
      const [record] = await auditWhere(audit, (x) => mine(x) && x.protocol === "tcp", 1);
      assert.equal(record.target, `127.0.0.1:${tcpEcho.port}`);
      assert.deepEqual([record.bytes_up, record.bytes_down], [message.length, message.length]);
      await s.end();
    } finally {
      s.destroy();
    }
    const [flow] = await auditWhere(audit, (x) => mine(x) && x.protocol === "ip", 1);
    assert.deepEqual(flow.flow, { protocol: 6, source: "100.64.0.1:45000", destination: `127.0.0.1:${tcpEcho.port}` });
  });

  test("h2: a refused TCP connection is reset, a denied one prohibited; other protocols are unreachable", async () => {
    // Held, never listening, on both loopbacks: a SYN to it is refused on each.
    const refusing4 = await refusingTcpPort("127.0.0.1");
    const refusing6 = await refusingTcpPort("::1").catch(async (e) => {
      await refusing4.close();
      throw e;
    });
    const s = await open({ over: "h2", port: port.clear });
    try {
      await s.initial();
      for (const [src, dst, closedPort] of [
        [s.address(4), "127.0.0.1", refusing4.port],
        [s.address(6), "::1", refusing6.port],
      ] as const) {
        s.sendPacket(tcpSegment({ src, dst, srcPort: 45100, dstPort: closedPort, seq: 5000, flags: TCP_SYN }));
        const rst = await s.nextPacket((p) => p.tcp?.dstPort === 45100 && p.src === dst, `a reset from ${dst}`);
        assert.deepEqual(rst.errors, []);
        assert.deepEqual([rst.dst, rst.tcp!.srcPort, rst.tcp!.flags, rst.tcp!.seq, rst.tcp!.ack], [src, closedPort, TCP_RST | TCP_ACK, 0, 5001]);
      }
      const denied = await icmpErrorFor(s, tcpSegment({ src: s.address(4), dst: "10.1.2.3", srcPort: 45101, dstPort: 80, seq: 1, flags: TCP_SYN }), "a TCP SYN to 10.1.2.3");
      assert.deepEqual([denied.icmp!.type, denied.icmp!.code], [3, 13]);
      // GRE (47) is not carried: protocol unreachable; for IPv6 a parameter problem
      // pointing at the Next Header field.
      const gre4 = await icmpErrorFor(s, ipPacket({ src: s.address(4), dst: "127.0.0.1", protocol: 47, payload: Buffer.from("gre?") }), "GRE over IPv4");
      assert.deepEqual([gre4.icmp!.type, gre4.icmp!.code], [3, 2]);
      const gre6 = await icmpErrorFor(s, ipPacket({ src: s.address(6), dst: "::1", protocol: 47, payload: Buffer.from("gre?") }), "GRE over IPv6");
      assert.deepEqual([gre6.icmp!.type, gre6.icmp!.code, gre6.icmp!.rest.readUInt32BE(0)], [4, 1, 6]);
      await s.end();
    } finally {
      s.destroy();
      await Promise.all([refusing4.close(), refusing6.close()]);
    }
  });

  test("h2 and HTTP/1.1: a burst of packets all come back, framed intact", async () => {
    for (const over of ["h2", "h1"] as const) {
      const s = await open({ over, port: port.clear });
      try {
        await s.initial();
        const src = s.address(4);
        const sent = Array.from({ length: 64 }, (_, i) => Buffer.concat([Buffer.from(`burst ${i} `), randomBytes(1000)]));
        s.write(Buffer.concat(sent.map((payload) => datagramCapsule(udpPacket({ src, dst: "127.0.0.1", srcPort: 40200, dstPort: echo4.port, payload })))));
        const back = await s.waitFor(() => (s.packets.length >= sent.length ? s.packets.splice(0) : undefined), `${over}: 64 echoes`);
        const payloads = back.map((p) => {
          const parsed = parsePacket(p);
          assert.deepEqual(parsed.errors, []);
          return parsed.udp!.data.toString("hex");
        });
        assert.deepEqual(payloads.sort(), sent.map((b) => b.toString("hex")).sort());
        await s.end();
      } finally {
        s.destroy();
      }
    }
  });

  test("h2: spoofed sources, bad checksums, malformed packets, fragments and unknown contexts are dropped and counted", async () => {
    const before = {
      spoofed: await counter(dropped("clear", "spoofed_source")),
      checksum: await counter(dropped("clear", "bad_checksum")),
      malformed: await counter(dropped("clear", "malformed")),
      fragment: await counter(dropped("clear", "fragment")),
      context: await counter(dropped("clear", "unknown_context")),
    };
    const received = echo4.received.length;
    const s = await open({ over: "h2", port: port.clear });
    try {
      await s.initial();
      const payload = (text: string) => Buffer.from(text);
      s.sendPacket(udpPacket({ src: "100.64.0.99", dst: "127.0.0.1", srcPort: 40000, dstPort: echo4.port, payload: payload("spoofed v4") }));
      s.sendPacket(udpPacket({ src: "fd00:6f78::99", dst: "::1", srcPort: 40000, dstPort: echo6.port, payload: payload("spoofed v6") }));
      s.sendPacket(udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40000, dstPort: echo4.port, payload: payload("bad sum"), badChecksum: true }));
      s.sendPacket(Buffer.from("not an IP packet"));
      // IPv6 forbids a zero UDP checksum (RFC 8200 §8.1).
      s.sendPacket(udpPacket({ src: s.address(6), dst: "::1", srcPort: 40000, dstPort: echo6.port, payload: payload("zero sum v6"), noChecksum: true }));
      // A fragment (more fragments set) is not reassembled.
      const whole = udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40000, dstPort: echo4.port, payload: payload("fragment") });
      s.sendPacket(ipPacket({ src: s.address(4), dst: "127.0.0.1", protocol: UDP, payload: whole.subarray(20), moreFragments: true }));
      // A DATAGRAM capsule with a context ID other than 0 (RFC 9484 §6).
      s.write(datagramCapsule(udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40000, dstPort: echo4.port, payload: payload("context 5") }), 5));
      // The packets are handled in order: once this echo is back, the others were dropped.
      await udpRoundTrips(s, "127.0.0.1", echo4.port, 40000, 1);
      // IPv4 allows a zero UDP checksum (none computed): carried.
      const plain = payload("zero sum v4");
      s.sendPacket(udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40000, dstPort: echo4.port, payload: plain, noChecksum: true }));
      const echoed = await s.nextPacket((p) => p.udp?.data.equals(plain) ?? false, "the echo of a packet without a UDP checksum");
      assert.deepEqual(echoed.errors, []);
      await s.end();
    } finally {
      s.destroy();
    }
    await counterReaches(dropped("clear", "spoofed_source"), before.spoofed + 2);
    await counterReaches(dropped("clear", "bad_checksum"), before.checksum + 2);
    await counterReaches(dropped("clear", "malformed"), before.malformed + 1);
    await counterReaches(dropped("clear", "fragment"), before.fragment + 1);
    await counterReaches(dropped("clear", "unknown_context"), before.context + 1);
    assert.equal(echo4.received.length, received + 2, "only the valid packets reached the echo server");
    assert.equal(echo6.received.filter((d) => d.toString() === "spoofed v6").length, 0);
  });

  test("h2: denied destinations are answered with ICMP administratively prohibited; nothing reaches them", async () => {
    const before = await counter(icmpGenerated("clear", "prohibited"));
    const s = await open({ over: "h2", port: port.clear });
    try {
      await s.initial();
      const src4 = s.address(4);
      const src6 = s.address(6);
      for (const [dst, dstPort] of [
        ["127.0.0.2", deniedEcho.port],
        ["10.1.2.3", 53],
        ["192.0.2.1", 53],
      ] as const) {
        const error = await icmpErrorFor(s, udpPacket({ src: src4, dst, srcPort: 40010, dstPort, payload: Buffer.from("denied") }), dst);
        assert.deepEqual([error.icmp!.type, error.icmp!.code], [3, 13], `${dst}: destination unreachable, communication administratively prohibited`);
      }
      const error = await icmpErrorFor(s, udpPacket({ src: src6, dst: "2001:db8::1", srcPort: 40010, dstPort: 53, payload: Buffer.from("denied") }), "2001:db8::1");
      assert.deepEqual([error.icmp!.type, error.icmp!.code], [1, 1], "ICMPv6 destination unreachable, administratively prohibited");
      // An echo request to a denied destination too.
      const ping = await icmpErrorFor(s, icmpEchoRequest({ src: src4, dst: "10.1.2.3", id: 1, seq: 1, data: Buffer.from("ping") }), "ping 10.1.2.3");
      assert.deepEqual([ping.icmp!.type, ping.icmp!.code], [3, 13]);
      await s.end();
    } finally {
      s.destroy();
    }
    assert.equal(deniedEcho.received.length, 0, "nothing reached 127.0.0.2");
    await counterReaches(icmpGenerated("clear", "prohibited"), before + 5);
  });

  test("h2: a packet with TTL 1 is answered with ICMP time exceeded", async () => {
    const before = await counter(icmpGenerated("clear", "time_exceeded"));
    const s = await open({ over: "h2", port: port.clear });
    try {
      await s.initial();
      const v4 = await icmpErrorFor(s, udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40020, dstPort: echo4.port, payload: Buffer.from("ttl"), ttl: 1 }), "TTL 1");
      assert.deepEqual([v4.icmp!.type, v4.icmp!.code], [11, 0]);
      const v6 = await icmpErrorFor(s, udpPacket({ src: s.address(6), dst: "::1", srcPort: 40020, dstPort: echo6.port, payload: Buffer.from("ttl"), ttl: 1 }), "hop limit 1");
      assert.deepEqual([v6.icmp!.type, v6.icmp!.code], [3, 0]);
      await s.end();
    } finally {
      s.destroy();
    }
    assert.ok(!echo4.received.some((d) => d.toString() === "ttl"));
    await counterReaches(icmpGenerated("clear", "time_exceeded"), before + 2);
  });

  test("h2: a packet larger than ip.mtu (1300) is answered with Packet Too Big; one that fits goes through", async () => {
    const before = await counter(icmpGenerated("mtu", "packet_too_big"));
    const s = await open({ over: "h2", port: port.mtu });
    try {
      await s.initial();
      const big4 = udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40030, dstPort: echo4.port, payload: randomBytes(1400 - 28) });
      assert.equal(big4.length, 1400);
      const v4 = await icmpErrorFor(s, big4, "a 1400-byte IPv4 packet");
      assert.deepEqual([v4.icmp!.type, v4.icmp!.code, v4.icmp!.rest.readUInt16BE(2)], [3, 4, 1300], "fragmentation needed, next-hop MTU 1300");
      assert.ok(v4.payload.length + 20 <= 576, "an ICMPv4 error stays within 576 bytes");
      const big6 = udpPacket({ src: s.address(6), dst: "::1", srcPort: 40030, dstPort: echo6.port, payload: randomBytes(1400 - 48) });
      const v6 = await icmpErrorFor(s, big6, "a 1400-byte IPv6 packet");
      assert.deepEqual([v6.icmp!.type, v6.icmp!.code, v6.icmp!.rest.readUInt32BE(0)], [2, 0, 1300], "Packet Too Big, MTU 1300");
      assert.ok(v6.payload.length + 40 <= 1280, "an ICMPv6 error stays within 1280 bytes");
      // Exactly the MTU passes, and its echo comes back.
      const payload = randomBytes(1300 - 28);
      s.sendPacket(udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 40031, dstPort: echo4.port, payload }));
      const reply = await s.nextPacket((p) => p.udp?.dstPort === 40031, "the echo of a 1300-byte packet");
      assert.deepEqual(reply.errors, []);
      assert.ok(reply.udp!.data.equals(payload));
      await s.end();
    } finally {
      s.destroy();
    }
    await counterReaches(icmpGenerated("mtu", "packet_too_big"), before + 2);
    assert.ok((await counter(dropped("mtu", "too_large"))) >= 2);
  });

  test("h2: a scope of one address and protocol: routes, addresses, out-of-scope packets refused", async () => {
    const before = await counter(dropped("clear", "out_of_scope"));
    await poolsEmpty("clear");
    const s = await open({ over: "h2", port: port.clear, path: scopePath("127.0.0.1", "17") });
    try {
      const { assigned, routes } = await s.initial();
      // The scope reaches IPv4 only: no IPv6 address, one route for UDP to 127.0.0.1.
      assert.deepEqual(assigned, [{ requestId: 0, version: 4, address: "100.64.0.1", prefixLength: 32 }]);
      assert.deepEqual(routes, [{ version: 4, start: "127.0.0.1", end: "127.0.0.1", protocol: 17 }]);
      await udpRoundTrips(s, "127.0.0.1", echo4.port, 40040, 1);
      const src = s.address(4);
      const other = await icmpErrorFor(s, udpPacket({ src, dst: "127.0.0.2", srcPort: 40040, dstPort: deniedEcho.port, payload: Buffer.from("out of scope") }), "another address");
      assert.deepEqual([other.icmp!.type, other.icmp!.code], [3, 13]);
      const tcp = await icmpErrorFor(s, tcpSegment({ src, dst: "127.0.0.1", srcPort: 40041, dstPort: tcpEcho.port, seq: 1, flags: TCP_SYN }), "another protocol");
      assert.deepEqual([tcp.icmp!.type, tcp.icmp!.code], [3, 13]);
      await s.end();
    } finally {
      s.destroy();
    }
    assert.equal(deniedEcho.received.length, 0);
    await counterReaches(dropped("clear", "out_of_scope"), before + 2);
    // A prefix scope (192.0.2.0/24 is documentation space: nothing of it is routed).
    const doc = await open({ over: "h2", port: port.clear, path: scopePath("192.0.2.0/24", "*") });
    try {
      const { routes } = await doc.initial();
      assert.deepEqual(routes, []);
      await doc.end();
    } finally {
      doc.destroy();
    }
  });

  test("h2 and HTTP/1.1: scopes of a host name, an IPv6 address and a protocol", async () => {
    // echo.test resolves (through Oxy's resolver) to 127.0.0.1 and ::1: both families.
    await poolsEmpty("clear");
    const named = await open({ over: "h1", port: port.clear, path: scopePath("echo.test", "*") });
    try {
      const { assigned, routes } = await named.initial();
      assert.deepEqual(assigned.map((a) => a.address), ["100.64.0.1", "fd00:6f78::1"]);
      assert.deepEqual(routes, [
        { version: 4, start: "127.0.0.1", end: "127.0.0.1", protocol: 0 },
        { version: 6, start: "::1", end: "::1", protocol: 0 },
      ]);
      await udpRoundTrips(named, "::1", echo6.port, 40070, 1);
      await udpRoundTrips(named, "127.0.0.1", echo4.port, 40070, 1);
      const out = await icmpErrorFor(named, udpPacket({ src: named.address(4), dst: "127.0.0.2", srcPort: 40070, dstPort: deniedEcho.port, payload: Buffer.from("x") }), "127.0.0.2");
      assert.deepEqual([out.icmp!.type, out.icmp!.code], [3, 13]);
      await named.end();
    } finally {
      named.destroy();
    }
    const unknown = await refused({ over: "h2", port: port.clear, path: scopePath("nope.test", "*") });
    assert.equal(unknown.status, 502, unknown.body);
    assert.ok(dns.queries.some((q) => q.includes("nope.test")), JSON.stringify(dns.queries));
    // An IPv6 address: an IPv6 address only, one IPv6 route.
    await poolsEmpty("clear");
    const v6 = await open({ over: "h2", port: port.clear, path: scopePath("::1", "17") });
    try {
      const { assigned, routes } = await v6.initial();
      assert.deepEqual(assigned, [{ requestId: 0, version: 6, address: "fd00:6f78::1", prefixLength: 128 }]);
      assert.deepEqual(routes, [{ version: 6, start: "::1", end: "::1", protocol: 17 }]);
      await udpRoundTrips(v6, "::1", echo6.port, 40071, 2);
      await v6.end();
    } finally {
      v6.destroy();
    }
    // Any destination, UDP only: the wildcard routes, each for protocol 17.
    const udpOnly = await open({ over: "h2", port: port.clear, path: scopePath("*", "17") });
    try {
      const { routes } = await udpOnly.initial();
      assert.ok(routes.length > 4 && routes.every((r) => r.protocol === 17), JSON.stringify(routes));
      assertWildcardRoutes(
        routes.map((r) => ({ ...r, protocol: 0 })),
        [4, 6],
      );
      await udpOnly.end();
    } finally {
      udpOnly.destroy();
    }
    await poolsEmpty("clear");
  });

  test("h2: flows end after ip.flow_idle_timeout; beyond ip.max_flows new flows are dropped", async () => {
    const before = await counter(dropped("flows", "too_many_flows"));
    const s = await open({ over: "h2", port: port.flows });
    const mine = (x: any) => x.endpoint === "flows" && x.client === `127.0.0.1:${s.localPort}` && x.protocol === "ip";
    try {
      await s.initial();
      await udpRoundTrips(s, "127.0.0.1", echo4.port, 40080, 2);
      // A second flow while the first is tracked: dropped (max_flows 1).
      const received = echo6.received.length;
      s.sendPacket(udpPacket({ src: s.address(6), dst: "::1", srcPort: 40081, dstPort: echo6.port, payload: Buffer.from("one too many") }));
      await counterReaches(dropped("flows", "too_many_flows"), before + 1);
      assert.equal(echo6.received.length, received);
      // The first flow idles out, and is audited so.
      const [first] = await auditWhere(audit, mine, 1);
      assert.equal(first.close_reason, "forward: idle_timeout", JSON.stringify(first));
      assert.deepEqual([first.flow.source, first.packets_up, first.packets_down], ["100.64.0.1:40080", 2, 2]);
      // Now there is room again, in the same stream.
      await udpRoundTrips(s, "::1", echo6.port, 40081, 1);
      await s.end();
    } finally {
      s.destroy();
    }
    const records = await auditWhere(audit, mine, 2);
    assert.deepEqual(records[1].flow.destination, `[::1]:${echo6.port}`);
  });

  test("a stream the client resets or drops gives its addresses back", async () => {
    for (const how of ["h2 RST_STREAM", "h2 connection closed", "HTTP/1.1 connection closed"]) {
      const s = await open({ over: how.startsWith("h2") ? "h2" : "h1", port: port.clear });
      const mine = (x: any) => x.endpoint === "clear" && x.client === `127.0.0.1:${s.localPort}` && x.protocol === "connect-ip";
      await s.initial();
      await udpRoundTrips(s, "127.0.0.1", echo4.port, 40090, 1);
      assert.equal(await counter(inUse("clear", ip4)), 1);
      if (how === "h2 RST_STREAM") s.reset();
      else s.destroy();
      await poolsEmpty("clear");
      const [record] = await auditWhere(audit, mine, 1);
      assert.deepEqual([record.packets_up, record.packets_down], [1, 1], `${how}: ${JSON.stringify(record)}`);
      s.destroy();
    }
  });

  test("the counters of a stream: packets and bytes each way, flows, ICMP errors", async () => {
    // The mtu endpoint carried exactly the packets of the Packet Too Big test.
    assert.equal(await counter('oxy_ip_packets_total{direction="up",endpoint="mtu"}'), 3);
    assert.equal(await counter('oxy_ip_bytes_total{direction="up",endpoint="mtu"}'), 1400 + 1400 + 1300);
    assert.equal(await counter('oxy_ip_packets_total{direction="down",endpoint="mtu"}'), 3);
    assert.equal(await counter('oxy_ip_bytes_total{direction="down",endpoint="mtu"}'), 576 + 1280 + 1300);
    assert.equal(await counter('oxy_ip_flows_total{action="forward",endpoint="mtu",protocol="udp"}'), 1);
    assert.equal(await counter(icmpGenerated("mtu", "packet_too_big")), 2);
    assert.equal(await counter(dropped("mtu", "too_large")), 2);
    assert.equal(await counter('oxy_http_requests_total{endpoint="mtu",method="CONNECT",status="200",version="2"}'), 1);
  });

  test("h2 and HTTP/1.1: malformed capsules end the stream and are counted", async () => {
    const cases: [string, string, (s: ConnectIpStream) => void, string?][] = [
      ["ADDRESS_REQUEST with request ID 0", "bad_address_request", (s) => s.sendCapsule(ADDRESS_REQUEST, encodeAddressEntries([{ requestId: 0, prefix: "0.0.0.0/32" }]))],
      ["ADDRESS_REQUEST without entries", "bad_address_request", (s) => s.sendCapsule(ADDRESS_REQUEST, Buffer.alloc(0))],
      [
        "ROUTE_ADVERTISEMENT out of order",
        "unordered_routes",
        (s) =>
          s.sendCapsule(
            ROUTE_ADVERTISEMENT,
            encodeRoutes([
              { start: "11.0.0.0", end: "12.0.0.0", protocol: 0 },
              { start: "0.0.0.0", end: "1.0.0.0", protocol: 0 },
            ]),
          ),
      ],
      ["ADDRESS_ASSIGN with IP version 5", "bad_ip_version", (s) => s.sendCapsule(ADDRESS_ASSIGN, Buffer.from([0, 5, 1, 2, 3, 4, 32]))],
      // 1601 bytes declared, the limit is 1600; the rest never comes.
      ["a capsule over max_capsule_bytes", "too_large", (s) => s.write(Buffer.concat([encodeVarint(0), encodeVarint(1601), Buffer.alloc(100)])), "raw"],
    ];
    for (const over of ["h2", "h1"] as const) {
      for (const [what, reason, send, endpoint = "clear"] of cases) {
        const before = await counter(capsuleErrors(endpoint, reason));
        const s = await open({ over, port: port[endpoint] });
        try {
          await s.initial();
          send(s);
          await s.closed();
        } catch (e) {
          throw new Error(`${over}, ${what}: ${(e as Error).message}`);
        } finally {
          s.destroy();
        }
        await counterReaches(capsuleErrors(endpoint, reason), before + 1);
      }
    }
    await poolsEmpty("clear");
    await poolsEmpty("raw");
  });

  test("the address pool: exhausted → 503, addresses come back when streams end", async () => {
    const exhausted = await counter(httpErrors("small", "address_pool_exhausted"));
    const a = await open({ over: "h2", port: port.small });
    const b = await open({ over: "h1", port: port.small });
    try {
      assert.deepEqual((await a.initial()).assigned, [{ requestId: 0, version: 4, address: "100.64.0.1", prefixLength: 32 }]);
      const { assigned, routes } = await b.initial();
      assert.deepEqual(assigned, [{ requestId: 0, version: 4, address: "100.64.0.2", prefixLength: 32 }]);
      assertWildcardRoutes(routes, [4]);
      assert.equal(await oxy.metric(inUse("small", ip4)), 2);
      assert.equal(await oxy.metric(inUse("small", ip6)), undefined, "no IPv6 pool");
      for (const over of ["h2", "h1"] as const) {
        const third = await refused({ over, port: port.small });
        assert.equal(third.status, 503, `${over}: ${third.body}`);
        assert.match(third.body, /no free address in the 100\.64\.0\.0\/30 pool/);
      }
      assert.equal(await counter(httpErrors("small", "address_pool_exhausted")), exhausted + 2);
      await a.end();
      await oxy.waitForMetric(inUse("small", ip4), 1);
      const c = await open({ over: "h2", port: port.small });
      try {
        assert.deepEqual((await c.initial()).assigned, [{ requestId: 0, version: 4, address: "100.64.0.1", prefixLength: 32 }]);
        await udpRoundTrips(c, "127.0.0.1", echo4.port, 40050, 1);
        await c.end();
      } finally {
        c.destroy();
      }
      await b.end();
    } finally {
      a.destroy();
      b.destroy();
    }
    await oxy.waitForMetric(inUse("small", ip4), 0);
  });

  test("refusals: disabled → 405, a bad scope → 400, no credentials → 407, no pool for the scope → 503", async () => {
    const badScope = await counter(httpErrors("clear", "bad_connect_ip_scope"));
    for (const over of ["h2", "h1"] as const) {
      const off = await refused({ over, port: port.off, ca: pki.ca });
      assert.equal(off.status, 405, off.body);
      for (const path of [
        scopePath("192.0.2.1/24"), // host bits set
        scopePath("*", "256"),
        scopePath("a_b"),
        "/.well-known/masque/ip/*/",
        "/other/path",
      ]) {
        const bad = await refused({ over, port: port.clear, path });
        assert.equal(bad.status, 400, `${over} ${path}: ${bad.body}`);
      }
      const anonymous = await refused({ over, port: port.auth });
      assert.equal(anonymous.status, 407, anonymous.body);
      assert.match(anonymous.headers["proxy-authenticate"] ?? "", /^Basic realm="ip"/, JSON.stringify(anonymous.headers));
      // An IPv6 scope where there is no IPv6 pool.
      const noPool = await refused({ over, port: port.small, path: scopePath("::1") });
      assert.equal(noPool.status, 503, noPool.body);
      assert.match(noPool.body, /no address pool serves this scope/);
    }
    assert.ok((await counter(httpErrors("off", "connect_ip_disabled"))) >= 2);
    assert.equal(await counter(httpErrors("clear", "bad_connect_ip_scope")), badScope + 10);
    assert.equal(await counter(httpErrors("small", "connect_ip_no_pool")), 2);
    assert.equal(await counter(httpErrors("auth", "proxy_auth")), 2);
    const basic = `Basic ${Buffer.from("alice:s3cret").toString("base64")}`;
    const s = await open({ over: "h2", port: port.auth, headers: { "proxy-authorization": basic } });
    try {
      await s.initial();
      await udpRoundTrips(s, "127.0.0.1", echo4.port, 40060, 1);
      await s.end();
    } finally {
      s.destroy();
    }
    const [record] = await auditWhere(audit, (x) => x.endpoint === "auth" && x.protocol === "connect-ip", 1);
    assert.equal(record.user, "alice");
    await poolsEmpty("clear");
    await poolsEmpty("auth");
    await poolsEmpty("small", [ip4]);
  });
  test("h2: a UDP flow upgraded to a UDP tunnel carrying QUIC is intercepted: Oxy's QUIC server answers, nothing is forwarded", async () => {
    // A real QUIC v1 client Initial (aioquic): SNI origin.oxy.test, ALPN h3, 1200 bytes.
    const initial = readFileSync(join(repoRoot, "fuzz", "src", "quic-initial.bin"));
    assert.equal(initial.length, 1200);
    const ca = makeInterceptionCa();
    // The flow's destination: a socket of the test that must receive nothing.
    const target = createSocket("udp4");
    const received: Buffer[] = [];
    target.on("message", (msg) => received.push(msg));
    await new Promise<void>((ok) => target.bind(0, "127.0.0.1", ok));
    const targetPort = target.address().port;
    const fixture = await OxyProcess.start({
      binary: "fixture-app",
      settings: {
        egress: { allow: ["127.0.0.1/32"] },
        server: { shutdown_timeout: "2s" },
        endpoints: [
          {
            name: "ipquic",
            listen: ["127.0.0.1:0"],
            http: { connect_ip: { enabled: true } },
            tls_interception: { ca_chain: ca.cert, ca_key: ca.key },
            app: { ip_upgrade_udp: true, tunnel_decapsulate: true },
          },
        ],
      },
    });
    const minted = 'oxy_tls_interception_leaves_minted_total{endpoint="ipquic"}';
    let stopped;
    try {
      const s = await open({ over: "h2", port: fixture.port("ipquic") });
      try {
        await s.initial();
        const src = s.address(4);
        s.sendPacket(udpPacket({ src, dst: "127.0.0.1", srcPort: 40400, dstPort: targetPort, payload: initial }));
        const reply = await s.nextPacket(
          (p) => p.udp?.dstPort === 40400,
          "a UDP reply to the QUIC Initial",
          10_000,
        ).catch((e) => {
          throw new Error(`${(e as Error).message}\n${fixture.logs().slice(-4000)}`);
        });
        assert.deepEqual(reply.errors, [], "the reply's IP header and UDP checksum are valid");
        assert.deepEqual([reply.src, reply.dst, reply.udp!.srcPort], ["127.0.0.1", src, targetPort]);
        const quic = reply.udp!.data;
        assert.ok(quic.length >= 5, quic.toString("hex"));
        assert.equal(quic[0] & 0xc0, 0xc0, `a QUIC long-header packet: ${quic.subarray(0, 16).toString("hex")}`);
        assert.equal(quic.readUInt32BE(1), 0x00000001, "QUIC version 1");
        assert.ok(!quic.equals(initial), "not the Initial echoed back");
        // A leaf minted for origin.oxy.test: Oxy answered the handshake itself.
        await fixture.waitForMetric(minted, 1);
        // Interception, not forwarding: the target saw nothing.
        assert.equal(received.length, 0, "nothing reached the target");
        await fixture.waitForLog(/fixture saw inside a tunnel.*Quic\(.*origin\.oxy\.test/);
      } finally {
        s.destroy();
      }
    } finally {
      stopped = await fixture.stop();
      await new Promise<void>((ok) => target.close(() => ok()));
    }
    assert.deepEqual(stopped, { code: 0, signal: null }, fixture.logs().slice(-4000));
  });

  // ---------------------------------------------------------------------------------------
  // Bugs found by these tests, fixed.

  test(
    "h2: when the stream ends, the TCP connections it carried are closed too",
    async () => {
      const openBefore = tcpEcho.open;
      const s = await open({ over: "h2", port: port.clear });
      const mine = (x: any) => x.endpoint === "clear" && x.client === `127.0.0.1:${s.localPort}` && x.protocol === "tcp";
      try {
        await s.initial();
        const tcp = { src: s.address(4), dst: "127.0.0.1", srcPort: 45200, dstPort: tcpEcho.port };
        s.sendPacket(tcpSegment({ ...tcp, seq: 7000, flags: TCP_SYN }));
        const synAck = await s.nextPacket((p) => p.tcp?.dstPort === 45200 && (p.tcp.flags & TCP_SYN) !== 0, "SYN-ACK");
        s.sendPacket(tcpSegment({ ...tcp, seq: 7001, ack: (synAck.tcp!.seq + 1) >>> 0, flags: TCP_ACK | TCP_PSH, data: Buffer.from("left open") }));
        await s.nextPacket((p) => p.tcp?.dstPort === 45200 && p.tcp.data.length > 0, "the echo");
        assert.equal(tcpEcho.open, openBefore + 1);
        // The client goes away without closing its TCP connection.
        await s.end();
      } finally {
        s.destroy();
      }
      await until(() => (tcpEcho.open === openBefore ? true : undefined), "the upstream TCP connection to close");
      await oxy.waitForMetric('oxy_tunnel_active{endpoint="clear",protocol="tcp"}', 0);
      const [record] = await auditWhere(audit, mine, 1);
      assert.equal(record.target, `127.0.0.1:${tcpEcho.port}`);
    },
  );

  test(
    "h2: packets to multicast and broadcast destinations get no ICMP error (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7, RFC 4443 §2.4 (e))",
    async () => {
      const multicastBefore = await counter(dropped("clear", "multicast"));
      const icmpBefore = await icmpGeneratedTotal("clear");
      const s = await open({ over: "h2", port: port.clear });
      try {
        await s.initial();
        s.sendPacket(udpPacket({ src: s.address(4), dst: "224.0.0.251", srcPort: 5353, dstPort: 5353, payload: Buffer.from("mdns") }));
        s.sendPacket(udpPacket({ src: s.address(4), dst: "255.255.255.255", srcPort: 68, dstPort: 67, payload: Buffer.from("dhcp") }));
        s.sendPacket(udpPacket({ src: s.address(6), dst: "ff02::fb", srcPort: 5353, dstPort: 5353, payload: Buffer.from("mdns") }));
        // Refusing those takes no longer than a round trip through Oxy to the echo server;
        // and all three were seen and dropped before anything is looked at.
        await udpRoundTrips(s, "127.0.0.1", echo4.port, 40300, 1);
        await counterReaches(dropped("clear", "multicast"), multicastBefore + 3);
        assert.equal(await icmpGeneratedTotal("clear"), icmpBefore, "no ICMP error generated for them");
        const errors = s.packets.map(parsePacket).filter((p) => p.icmp);
        assert.deepEqual(
          errors.map((p) => `${p.src} -> ${p.dst}: ICMP ${p.icmp!.type}/${p.icmp!.code}`),
          [],
          "no ICMP error about a packet to a multicast or broadcast address, none from such an address",
        );
        await s.end();
      } finally {
        s.destroy();
      }
    },
  );

  test("a scope of ipproto 0 is refused: ROUTE_ADVERTISEMENT protocol 0 would mean any protocol", async () => {
    for (const over of ["h2", "h1"] as const) {
      const r = await refused({ over, port: port.clear, path: scopePath("*", "0") });
      assert.equal(r.status, 400, r.body);
      assert.match(r.body, /ipproto "0": use \* or a protocol number from 1 to 255/);
    }
  });

  test("Oxy stopping ends open CONNECT-IP streams: audited as shutdown, a clean exit", async () => {
    const path = auditPath();
    const other = await OxyProcess.start({
      binary: "oxy",
      settings: {
        egress: { allow: ["127.0.0.1/32"] },
        telemetry: { audit: { path } },
        server: { shutdown_timeout: "2s" },
        endpoints: [{ name: "ip", listen: ["127.0.0.1:0"], http: { connect_ip: { enabled: true } } }],
      },
    });
    const streams = [await open({ over: "h2", port: other.port("ip") }), await open({ over: "h1", port: other.port("ip") })];
    try {
      for (const s of streams) {
        await s.initial();
        await udpRoundTrips(s, "127.0.0.1", echo4.port, 40100, 1);
      }
      other.signal("SIGTERM");
      for (const s of streams) await s.closed(10_000);
      assert.deepEqual(await other.waitForExit(), { code: 0, signal: null }, other.logs());
    } finally {
      for (const s of streams) s.destroy();
      await other.stop("SIGKILL");
    }
    const records = readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    const sessions = records.filter((r) => r.protocol === "connect-ip");
    assert.deepEqual(sessions.map((r) => r.close_reason), ["shutdown", "shutdown"], JSON.stringify(records));
    const flows = records.filter((r) => r.protocol === "ip");
    assert.deepEqual(flows.map((r) => r.close_reason), ["forward: shutdown", "forward: shutdown"], JSON.stringify(records));
  });
});
