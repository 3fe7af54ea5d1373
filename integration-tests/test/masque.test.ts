// HTTP/3 on-ramp and MASQUE: CONNECT-UDP (RFC 9298) over HTTP/3 (HTTP Datagrams), HTTP/2
// and HTTP/1.1 (capsules) to a local UDP echo, with egress policy, idle timeouts, audit
// records and metrics; GET and CONNECT over HTTP/3; Alt-Svc; an independent aioquic
// client; malformed capsules and requests on raw sockets; settings checks.

import assert from "node:assert/strict";
import { connect as http2Connect } from "node:http2";
import { connect as netConnect, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { auditPath, auditWhere, readAudit } from "../lib/audit.ts";
import { makePki, type TestPki } from "../lib/certs.ts";
import { curl } from "../lib/curl.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { masqueClient } from "../lib/interop.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, closed, portOf, runToExit, sleep, writeConfig } from "../lib/oxy.ts";
import { UdpSession, runClient, udpLoad, type UdpSummary } from "../lib/oxy-client.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";
import { extendedConnectAllowed } from "../lib/h2.ts";

let pki: TestPki;
let echo: UdpEcho;
let tcpEcho: EchoServer;
let origin: Origin;

/** One Oxy whose egress policy allows loopback, with an endpoint per concern. */
let relay: OxyProcess;
let relayAudit: string;
/** The bound port of each endpoint (by name) of `relay` and `strict`; an HTTP/3
 * endpoint's QUIC socket has the same number as its TCP listener. */
const port: Record<string, number> = {};

/** One Oxy with the default egress policy (loopback denied). */
let strict: OxyProcess;
let strictAudit: string;

// ---------------------------------------------------------------------------------------
// helpers

const echoTarget = () => `127.0.0.1:${echo.port}`;

/** The sum of the samples of `name` whose labels include all of `labels`. */
async function sumSamples(oxy: OxyProcess, name: string, labels: Record<string, string>): Promise<number> {
  const { body } = await oxy.telemetry("/metrics");
  let sum = 0;
  for (const line of body.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const end = line.indexOf("} ");
    const have = line.slice(name.length + 1, end).split(",");
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) sum += Number(line.slice(end + 2));
  }
  return sum;
}

/** A counter sample that may not exist yet (0 then). */
async function counter(oxy: OxyProcess, sample: string): Promise<number> {
  return (await oxy.metric(sample)) ?? 0;
}

/** Checks a load summary: everything came back, or what did not is counted as dropped. */
function assertDelivered(summary: UdpSummary, expectedSent: number, dropped: number) {
  assert.equal(summary.sent, expectedSent, JSON.stringify(summary));
  assert.ok(summary.received <= summary.sent, JSON.stringify(summary));
  assert.ok(
    summary.received >= summary.sent - dropped,
    `${summary.sent - summary.received} datagrams lost but only ${dropped} counted in oxy_udp_dropped_total: ${JSON.stringify(summary)}`,
  );
  assert.ok(dropped <= summary.sent / 100, `${dropped} of ${summary.sent} datagrams dropped`);
}

// QUIC variable-length integers and capsules (RFC 9000 §16, RFC 9297 §3.2), for raw tests.

function varint(n: number): Buffer {
  if (n < 64) return Buffer.from([n]);
  if (n < 16384) return Buffer.from([0x40 | (n >> 8), n & 0xff]);
  throw new Error("varint too large for this helper");
}

/** A DATAGRAM capsule with an HTTP Datagram payload: context ID, then the UDP payload. */
function datagramCapsule(context: number, payload: Buffer | string): Buffer {
  const body = Buffer.concat([varint(context), Buffer.from(payload)]);
  return Buffer.concat([varint(0), varint(body.length), body]);
}

function readVarint(buf: Buffer, at: number): [number, number] | undefined {
  if (at >= buf.length) return undefined;
  const len = 1 << (buf[at] >> 6);
  if (at + len > buf.length) return undefined;
  let value = buf[at] & 0x3f;
  for (let i = 1; i < len; i++) value = value * 256 + buf[at + i];
  return [value, len];
}

/** Complete capsules in `buf` as [type, value]. */
function parseCapsules(buf: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let at = 0;
  for (;;) {
    const type = readVarint(buf, at);
    if (!type) break;
    const length = readVarint(buf, at + type[1]);
    if (!length) break;
    const start = at + type[1] + length[1];
    if (start + length[0] > buf.length) break;
    out.push([type[0], buf.subarray(start, start + length[0])]);
    at = start + length[0];
  }
  return out;
}

interface RawResponse {
  socket: Socket;
  status: number;
  head: string;
  /** Bytes after the response head (capsules). */
  data: () => Buffer;
}

/** Sends an HTTP/1.1 CONNECT-UDP upgrade request for `path` and reads the response head. */
function upgrade(port: number, path: string): Promise<RawResponse> {
  return new Promise((ok, fail) => {
    let buf = Buffer.alloc(0);
    let answered = false;
    const socket = netConnect({ port, host: "127.0.0.1" }, () =>
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n`,
      ),
    );
    socket.on("error", (e) => (answered ? undefined : fail(e)));
    socket.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf("\r\n\r\n");
      if (answered || end < 0) return;
      answered = true;
      const head = buf.subarray(0, end).toString();
      const status = Number(head.split(" ")[1]);
      const start = end + 4;
      ok({ socket, status, head, data: () => buf.subarray(start) });
    });
    socket.on("close", () => (answered ? undefined : fail(new Error(`closed without a response: ${buf}`))));
  });
}

// The shared Oxy processes are stopped in this suite's `after`, before lib/oxy.ts kills
// whatever is left at the end of the file.
describe("HTTP/3 on-ramp and MASQUE", () => {
  before(async () => {
    pki = makePki();
    [echo, tcpEcho, origin] = await Promise.all([startUdpEcho(), startEchoServer(), startOrigin()]);
    const tls = { enabled: true, certificates: [pki.server] };
    const upstream = `http://127.0.0.1:${origin.port}`;
    const connect_udp = { enabled: true };
    relayAudit = auditPath();
    relay = await OxyProcess.start({
      binary: "oxy",
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        telemetry: { audit: { path: relayAudit } },
        // CONNECT and CONNECT-UDP are off unless an endpoint turns them on.
        endpoints: [
          { name: "h3", listen: ["127.0.0.1:0"], tls, http: { upstream, connect: true, connect_udp, h3: { enabled: true } } },
          { name: "noalt", listen: ["127.0.0.1:0"], tls, http: { upstream, h3: { enabled: true, alt_svc: false } } },
          { name: "clear", listen: ["127.0.0.1:0"], http: { connect_udp } },
          { name: "idle", listen: ["127.0.0.1:0"], tls, http: { connect_udp, h3: { enabled: true } }, udp: { idle_timeout: "300ms" } },
          { name: "interop", listen: ["127.0.0.1:0"], tls, http: { connect_udp, h3: { enabled: true } } },
          { name: "raw", listen: ["127.0.0.1:0"], http: { connect_udp: { ...connect_udp, max_capsule_bytes: 1500 } } },
          { name: "off", listen: ["127.0.0.1:0"], http: { connect_udp: { enabled: false } } },
        ],
      },
    });
    strictAudit = auditPath();
    strict = await OxyProcess.start({
      binary: "oxy",
      settings: {
        telemetry: { audit: { path: strictAudit } },
        endpoints: [{ name: "deny", listen: ["127.0.0.1:0"], tls, http: { connect_udp, h3: { enabled: true } } }],
      },
    });
    for (const oxy of [relay, strict]) {
      for (const endpoint of oxy.endpoints()) {
        port[endpoint.name] = oxy.port(endpoint.name, "tcp");
        const quic = endpoint.listeners.find((l) => l.transport === "quic");
        if (quic) assert.equal(portOf(quic.address), port[endpoint.name], `${endpoint.name}: QUIC on the TCP port's number`);
      }
    }
    assert.deepEqual(Object.keys(port).sort(), ["clear", "deny", "h3", "idle", "interop", "noalt", "off", "raw"]);
  });

  after(async () => {
    const stops = await Promise.all([relay?.stop(), strict?.stop()]);
    await Promise.all([echo?.close(), tcpEcho?.close(), origin?.close()]);
    assert.deepEqual(stops[0], { code: 0, signal: null }, relay?.logs());
    assert.deepEqual(stops[1], { code: 0, signal: null }, strict?.logs());
  });

  // ---------------------------------------------------------------------------------------
  // 1. CONNECT-UDP over HTTP/3, HTTP/2 and HTTP/1.1, 4 flows x 1000 datagrams each

  for (const over of ["h3", "h2", "h1"] as const) {
    test(`CONNECT-UDP over ${over}: 4 flows x 1000 datagrams echo back, counted and audited`, async () => {
      const started = 'oxy_tunnel_started_total{endpoint="h3",protocol="udp"}';
      const startedBefore = await counter(relay, started);
      const droppedBefore = await sumSamples(relay, "oxy_udp_dropped_total", { endpoint: "h3" });
      // Only flows this run started (not an earlier run's flow closing late).
      const since = Date.now() - 20;
      const isFlow = (r: any) => r.endpoint === "h3" && r.protocol === "udp" && Date.parse(r.start) >= since;

      const summary = await udpLoad({ proxy: `https://localhost:${port.h3}`, ca: pki.ca, over, target: echoTarget(), count: 1000, flows: 4 });
      assert.equal(summary.status, over === "h1" ? 101 : 200, JSON.stringify(summary));
      assert.equal(summary.flows, 4);
      const dropped = (await sumSamples(relay, "oxy_udp_dropped_total", { endpoint: "h3" })) - droppedBefore;
      assertDelivered(summary, 4000, dropped);
      assert.equal(await counter(relay, started), startedBefore + 4);
      const version = { h3: "3", h2: "2", h1: "1.1" }[over];
      const method = over === "h1" ? "GET" : "CONNECT";
      assert.ok(
        (await counter(relay, `oxy_http_requests_total{endpoint="h3",method="${method}",status="${summary.status}",version="${version}"}`)) >= 4,
      );

      // The client has exited: each flow ends as completed.
      const flows = await auditWhere(relayAudit, isFlow, 4);
      assert.equal(flows.length, 4, JSON.stringify(flows));
      for (const r of flows) {
        assert.equal(r.target, echoTarget());
        assert.equal(r.resolved, echoTarget());
        assert.equal(r.close_reason, "completed", JSON.stringify(r));
        assert.match(r.client, /^127\.0\.0\.1:\d+$/);
      }
      const sum = (k: string) => flows.reduce((n, r) => n + r[k], 0);
      assert.ok(sum("packets_up") <= summary.sent && sum("packets_up") >= summary.received, JSON.stringify(flows));
      assert.ok(sum("packets_down") >= summary.received && sum("packets_down") <= sum("packets_up"), JSON.stringify(flows));
      if (summary.received === 4000) {
        for (const r of flows) assert.deepEqual([r.packets_up, r.packets_down, r.bytes_up, r.bytes_down], [1000, 1000, 64_000, 64_000]);
      }
    });
  }

  test(
    "oxy-client over HTTP/3 ends its flows when it exits: Oxy audits them as completed at once",
    async () => {
      const isFlow = (r: any) => r.endpoint === "h3" && r.protocol === "udp";
      for (let run = 0; run < 5; run++) {
        const before = readAudit(relayAudit).filter(isFlow).length;
        const summary = await udpLoad({ proxy: `https://localhost:${port.h3}`, ca: pki.ca, target: echoTarget(), count: 50, flows: 4 });
        assert.equal(summary.status, 200);
        const flows = (await auditWhere(relayAudit, isFlow, before + 4, 2_000)).slice(before);
        for (const r of flows) assert.equal(r.close_reason, "completed");
      }
    },
  );

  // ---------------------------------------------------------------------------------------
  // 2. CONNECT-UDP without TLS: HTTP/2 prior knowledge (h2c) and HTTP/1.1

  test("CONNECT-UDP over h2c and HTTP/1.1 on a plain endpoint", async () => {
    for (const over of ["h2", "h1"] as const) {
      const startedBefore = await counter(relay, 'oxy_tunnel_started_total{endpoint="clear",protocol="udp"}');
      const droppedBefore = await sumSamples(relay, "oxy_udp_dropped_total", { endpoint: "clear" });
      const summary = await udpLoad({ proxy: `http://127.0.0.1:${port.clear}`, over, target: echoTarget(), count: 1000, flows: 4 });
      assert.equal(summary.status, over === "h2" ? 200 : 101, JSON.stringify(summary));
      const dropped = (await sumSamples(relay, "oxy_udp_dropped_total", { endpoint: "clear" })) - droppedBefore;
      assertDelivered(summary, 4000, dropped);
      assert.equal(await counter(relay, 'oxy_tunnel_started_total{endpoint="clear",protocol="udp"}'), startedBefore + 4);
    }
    assert.equal(await counter(relay, 'oxy_http_requests_total{endpoint="clear",method="CONNECT",status="200",version="2"}'), 4);
    assert.equal(await counter(relay, 'oxy_http_requests_total{endpoint="clear",method="GET",status="101",version="1.1"}'), 4);
  });

  // ---------------------------------------------------------------------------------------
  // 3. The egress policy refuses a private target

  test("a loopback target without an egress allow is refused with 403 over h3 and h2, and audited", async () => {
    const clientsBefore = echo.clients.size;
    for (const over of ["h3", "h2"] as const) {
      const summary = await udpLoad({ proxy: `https://localhost:${port.deny}`, ca: pki.ca, over, target: echoTarget(), count: 10 });
      assert.deepEqual(summary, { status: 403, sent: 0, received: 0 });
    }
    const records = await auditWhere(strictAudit, (r) => r.endpoint === "deny" && r.protocol === "udp", 2);
    for (const r of records.slice(0, 2)) {
      assert.equal(r.target, echoTarget());
      assert.match(r.close_reason, /egress denied: 127\.0\.0\.1 is a loopback address/);
      assert.deepEqual([r.packets_up, r.packets_down], [0, 0]);
    }
    assert.equal(await counter(strict, 'oxy_http_requests_total{endpoint="deny",method="CONNECT",status="403",version="3"}'), 1);
    assert.equal(await counter(strict, 'oxy_http_requests_total{endpoint="deny",method="CONNECT",status="403",version="2"}'), 1);
    assert.equal(echo.clients.size, clientsBefore, "nothing reached the target");
  });

  // ---------------------------------------------------------------------------------------
  // 4. An idle flow closes

  test("an idle CONNECT-UDP flow closes after udp.idle_timeout", async () => {
    const isIdleFlow = (r: any) => r.endpoint === "idle" && r.protocol === "udp";
    const before = readAudit(relayAudit).filter(isIdleFlow).length;
    const session = UdpSession.start({ proxy: `https://localhost:${port.idle}`, ca: pki.ca, over: "h3", target: echoTarget() });
    try {
      session.send("ping");
      await session.waitForLine("ping");
      const echoed = Date.now();
      // stdin stays open: only the idle timeout can end the flow.
      const [record] = (await auditWhere(relayAudit, isIdleFlow, before + 1, 2_000)).slice(before);
      assert.ok(Date.now() - echoed < 2_000);
      assert.equal(record.close_reason, "idle_timeout", JSON.stringify(record));
      assert.deepEqual([record.packets_up, record.packets_down, record.bytes_up, record.bytes_down], [1, 1, 4, 4]);
      assert.ok(record.duration_ms < 2_000, JSON.stringify(record));
      assert.match(session.stderr(), /status 200/);
    } finally {
      await session.kill();
    }
    // An independent client sees Oxy end the request stream when the flow idles out.
    const lingered = await masqueClient({ port: port.idle, ca: pki.ca, target: echoTarget(), count: 1, linger: 3 });
    assert.equal(lingered.received, 1, lingered.log);
    assert.equal(lingered.proxy_closed, true, lingered.log);
    assert.match(lingered.log, /lingered 0\.[0-9]+s; request stream ended by the proxy/);
    const [last] = (await auditWhere(relayAudit, isIdleFlow, before + 2)).slice(before + 1);
    assert.equal(last.close_reason, "idle_timeout");
  });

  test(
    "oxy-client exits by itself when Oxy closes its idle flow",
    async () => {
      for (const over of ["h3", "h2"] as const) {
        const session = UdpSession.start({ proxy: `https://localhost:${port.idle}`, ca: pki.ca, over, target: echoTarget() });
        try {
          session.send("ping");
          await session.waitForLine("ping");
          assert.equal(await session.exitsWithin(2_000), true, `over ${over}: still running 2 s after its flow idled out`);
        } finally {
          await session.kill();
        }
      }
    },
  );

  // ---------------------------------------------------------------------------------------
  // 5. GET over HTTP/3 through the reverse proxy; Alt-Svc on the TCP side

  test("GET over HTTP/3 reaches the upstream; TCP responses advertise h3 with Alt-Svc", async () => {
    const sample = 'oxy_http_requests_total{endpoint="h3",method="GET",status="200",version="3"}';
    const before = await counter(relay, sample);
    const seenBefore = origin.seen.length;
    const get = await runClient(["get", `https://localhost:${port.h3}/hello?x=1`, "--ca", pki.ca], { timeoutMs: 10_000 });
    assert.equal(get.code, 0, get.stderr);
    assert.match(get.stderr, /status 200/);
    assert.equal(JSON.parse(get.stdout).url, "/hello?x=1");
    assert.ok(origin.seen.slice(seenBefore).some((r) => r.url === "/hello?x=1" && r.method === "GET"));
    assert.equal(await counter(relay, sample), before + 1);

    const tcp = await curl(["-D", "-", "--cacert", pki.ca, `https://localhost:${port.h3}/hello`]);
    assert.equal(tcp.status, 200, tcp.stderr);
    assert.match(tcp.body, new RegExp(`^alt-svc: h3=":${port.h3}"; ma=86400\\r$`, "mi"));

    const quiet = await curl(["-D", "-", "--cacert", pki.ca, `https://localhost:${port.noalt}/hello`]);
    assert.equal(quiet.status, 200, quiet.stderr);
    assert.doesNotMatch(quiet.body, /^alt-svc:/im);
    const h3Anyway = await runClient(["get", `https://localhost:${port.noalt}/still-h3`, "--ca", pki.ca], { timeoutMs: 10_000 });
    assert.match(h3Anyway.stderr, /status 200/, "alt_svc: false only stops advertising");
  });

  // ---------------------------------------------------------------------------------------
  // 6. CONNECT over HTTP/3 through the TCP tunnel engine

  test("CONNECT over HTTP/3 tunnels TCP to the target", async () => {
    const isTcp = (r: any) => r.endpoint === "h3" && r.protocol === "tcp";
    const before = readAudit(relayAudit).filter(isTcp).length;
    const run = await runClient(["connect", "--proxy", `https://localhost:${port.h3}`, "--ca", pki.ca, "--target", `127.0.0.1:${tcpEcho.port}`], {
      input: "hello\n",
      timeoutMs: 10_000,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "hello\n");
    assert.match(run.stderr, /status 200/);
    const [record] = (await auditWhere(relayAudit, isTcp, before + 1)).slice(before);
    assert.equal(record.target, `127.0.0.1:${tcpEcho.port}`);
    assert.equal(record.close_reason, "completed");
    assert.deepEqual([record.bytes_up, record.bytes_down], [6, 6]);
    assert.equal(await counter(relay, 'oxy_tunnel_started_total{endpoint="h3",protocol="tcp"}'), 1);

    // More than the QUIC stream's flow-control window each way: the proxy's writes to
    // the client wait for the window to open, and every byte arrives in order.
    const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!@#$%^&*()_+-=[]{};\n";
    const big = line.repeat(Math.ceil((4 << 20) / line.length));
    const bulk = await runClient(["connect", "--proxy", `https://localhost:${port.h3}`, "--ca", pki.ca, "--target", `127.0.0.1:${tcpEcho.port}`], {
      input: big,
      timeoutMs: 30_000,
    });
    assert.equal(bulk.code, 0, bulk.stderr);
    assert.equal(bulk.stdout.length, big.length);
    assert.ok(bulk.stdout === big, "the echoed bytes differ");
    const [bulkRecord] = (await auditWhere(relayAudit, isTcp, before + 2)).slice(before + 1);
    assert.deepEqual([bulkRecord.close_reason, bulkRecord.bytes_up, bulkRecord.bytes_down], ["completed", big.length, big.length]);
  });

  // ---------------------------------------------------------------------------------------
  // 7. Interop with an independent HTTP/3 stack (aioquic)

  test("interop: aioquic CONNECT-UDP client", async () => {
    const isFlow = (r: any) => r.endpoint === "interop" && r.protocol === "udp";
    const load = await masqueClient({ port: port.interop, ca: pki.ca, target: echoTarget(), count: 1000 });
    assert.deepEqual([load.status, load.alpn, load.sent, load.received], [200, "h3", 1000, 1000], load.log);
    // aioquic closes its connection when done: the flow ends as completed at once.
    const [record] = await auditWhere(relayAudit, isFlow, 1, 2_000);
    assert.equal(record.close_reason, "completed", JSON.stringify(record));
    assert.deepEqual([record.packets_up, record.packets_down, record.target], [1000, 1000, echoTarget()]);

    const denied = await masqueClient({ port: port.deny, ca: pki.ca, target: echoTarget(), count: 10 });
    assert.deepEqual([denied.status, denied.sent, denied.received], [403, 0, 0], denied.log);

    const odd = await masqueClient({ port: port.interop, ca: pki.ca, target: echoTarget(), count: 20, strayDatagram: true, badContext: true });
    assert.deepEqual([odd.status, odd.sent, odd.received], [200, 20, 20], odd.log);
    await relay.waitForMetric('oxy_udp_dropped_total{endpoint="interop",reason="unknown_stream"}', 1);
    await relay.waitForMetric('oxy_udp_dropped_total{endpoint="interop",reason="unknown_context"}', 1);
    const [second] = (await auditWhere(relayAudit, isFlow, 2)).slice(1);
    assert.equal(second.packets_up, 20, "the dropped datagrams were not forwarded");
  });

  // ---------------------------------------------------------------------------------------
  // 8. Bad input over HTTP/1.1 and HTTP/2

  test("HTTP/1.1: a DATAGRAM capsule above max_capsule_bytes ends the stream", async () => {
    const r = await upgrade(port.raw, `/.well-known/masque/udp/127.0.0.1/${echo.port}/`);
    assert.equal(r.status, 101, r.head);
    assert.match(r.head, /^capsule-protocol: \?1$/im);
    assert.match(r.head, /^upgrade: connect-udp$/im);
    const gone = closed(r.socket);
    // A DATAGRAM capsule declaring 2000 bytes (limit 1500), and the start of its payload.
    r.socket.write(Buffer.concat([varint(0), varint(2000), Buffer.alloc(100)]));
    await Promise.race([gone, sleep(3_000).then(() => assert.fail("Oxy kept the stream open"))]);
    await relay.waitForMetric('oxy_connect_udp_capsule_errors_total{endpoint="raw",reason="too_large"}', 1);
  });

  test("HTTP/1.1: a capsule with an unknown context ID is dropped, the next one is echoed", async () => {
    const isFlow = (r: any) => r.endpoint === "raw" && r.protocol === "udp";
    const before = readAudit(relayAudit).filter(isFlow).length;
    const r = await upgrade(port.raw, `/.well-known/masque/udp/127.0.0.1/${echo.port}/`);
    assert.equal(r.status, 101, r.head);
    r.socket.write(Buffer.concat([datagramCapsule(5, "bad"), datagramCapsule(0, "good")]));
    const deadline = Date.now() + 3_000;
    while (!parseCapsules(r.data()).length && Date.now() < deadline) await sleep(20);
    // No wait for "anything else": the bad capsule is counted as dropped, so it was never
    // forwarded and no echo of it can follow.
    await relay.waitForMetric('oxy_udp_dropped_total{endpoint="raw",reason="unknown_context"}', 1);
    assert.deepEqual(
      parseCapsules(r.data()).map(([type, value]) => [type, value.toString("hex")]),
      [[0, Buffer.concat([Buffer.from([0]), Buffer.from("good")]).toString("hex")]],
    );
    const gone = closed(r.socket);
    r.socket.end();
    await gone;
    const [record] = (await auditWhere(relayAudit, isFlow, before + 1)).slice(before);
    assert.deepEqual([record.close_reason, record.packets_up, record.packets_down, record.bytes_up], ["completed", 1, 1, 4]);
  });

  test("HTTP/1.1: targets the URI template rejects are answered 400", async () => {
    const sample = 'oxy_http_errors_total{endpoint="raw",reason="bad_connect_udp_target"}';
    const before = await counter(relay, sample);
    const startedBefore = await counter(relay, 'oxy_tunnel_started_total{endpoint="raw",protocol="udp"}');
    for (const path of ["/.well-known/masque/udp/x/0/", "/.well-known/masque/udp/bad%20host/53/", "/other/path"]) {
      const r = await upgrade(port.raw, path);
      r.socket.destroy();
      assert.equal(r.status, 400, `${path}: ${r.head}`);
    }
    assert.equal(await counter(relay, sample), before + 3);
    assert.equal(await counter(relay, 'oxy_tunnel_started_total{endpoint="raw",protocol="udp"}'), startedBefore, "no flow was opened");
  });

  test("HTTP/1.1: connect_udp.enabled false answers 405", async () => {
    const r = await upgrade(port.off, `/.well-known/masque/udp/127.0.0.1/${echo.port}/`);
    r.socket.destroy();
    assert.equal(r.status, 405, r.head);
    assert.equal(await counter(relay, 'oxy_http_errors_total{endpoint="off",reason="connect_udp_disabled"}'), 1);
    assert.equal(await relay.metric('oxy_tunnel_started_total{endpoint="off",protocol="udp"}'), undefined);
  });

  test("HTTP/2: an extended CONNECT for another protocol (websocket) is answered 501", async () => {
    const session = http2Connect(`http://127.0.0.1:${port.raw}`);
    try {
      session.on("error", () => {});
      await extendedConnectAllowed(session);
      const status = await new Promise<number>((ok, fail) => {
        const req = session.request({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "http", ":path": "/chat", ":authority": `127.0.0.1:${port.raw}` });
        req.on("response", (headers) => ok(Number(headers[":status"])));
        req.on("error", fail);
        req.end();
      });
      assert.equal(status, 501);
    } finally {
      session.destroy();
    }
    assert.equal(await counter(relay, 'oxy_http_errors_total{endpoint="raw",reason="extended_connect"}'), 1);
  });

  // ---------------------------------------------------------------------------------------
  // 9. Settings checks

  test("HTTP/3 and CONNECT-UDP settings are checked before anything binds", async () => {
    const yaml = [
      "endpoints:",
      "  - name: a",
      "    listen: [127.0.0.1:7301]",
      "    http:",
      "      h3:",
      "        enabled: true",
      "      connect_udp:",
      '        uri_template: "/{target_host}/"',
      "  - name: b",
      "    listen: [127.0.0.1:7302]",
      "    tls:",
      "      enabled: true",
      `      certificates: [{ chain: ${pki.server.chain}, key: ${pki.server.key} }]`,
      "    http:",
      "      h3: { enabled: true, max_udp_payload: 100 }",
      "      connect_udp: { max_capsule_bytes: 100 }",
      "  - name: c",
      "    protocol: udp",
      "    listen: [127.0.0.1:7302]",
      "    udp: { target: 127.0.0.1:53 }",
      "",
    ].join("\n");
    const path = writeConfig(yaml);
    const r = await runToExit("oxy", ["--check-config", "-c", path]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /:6:\d+: endpoints\[0\]\.http\.h3\.enabled: HTTP\/3 needs TLS/);
    assert.match(r.stderr, /:8:\d+: endpoints\[0\]\.http\.connect_udp\.uri_template: .*\{target_host\} and \{target_port\}/);
    assert.match(r.stderr, /:15:\d+: endpoints\[1\]\.http\.h3\.max_udp_payload: must be from 1200 to 65527/);
    assert.match(r.stderr, /:16:\d+: endpoints\[1\]\.http\.connect_udp\.max_capsule_bytes: must be at least 1500/);
    // b's HTTP/3 listens on UDP 127.0.0.1:7302 too, so c cannot.
    assert.match(r.stderr, /:19:\d+: endpoints\[2\]\.listen\[0\]: address 127\.0\.0\.1:7302 is already used by endpoints\[1\] HTTP\/3/);
    assert.doesNotMatch(r.stderr, /panicked|RUST_BACKTRACE/);
  });
});
