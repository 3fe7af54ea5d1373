// The privacy-relay example app (examples/privacy-relay) with its shipped config
// (config/privacy-relay.yaml), adjusted only for the test (listeners on port 0, the test PKI's
// localhost certificate, loopback echo targets allowed): CONNECT-UDP over HTTP/3 and
// HTTP/2 and CONNECT over HTTP/2 and HTTP/3 for users with a bearer token or a client
// certificate, 407 with a Bearer challenge otherwise, 405 for anything but a tunnel,
// public destinations only, a per-user tunnel limit, and no client addresses in logs
// or audit records.

import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createSocket, type Socket as DgramSocket } from "node:dgram";
import { readFileSync, writeFileSync } from "node:fs";
import {
  connect as http2Connect,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from "node:http2";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { makePki, type TestPki } from "../lib/certs.ts";
import { refusingTcpPort } from "../lib/closed-ports.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { OxyProcess, binaryPath, repoRoot, runToExit, sleep, until as untilValue, writeConfig } from "../lib/oxy.ts";
import { UdpSession, runClient, udpLoad } from "../lib/oxy-client.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";
import { extendedConnectAllowed } from "../lib/h2.ts";
import { openConnectIp, udpPacket } from "../lib/connect-ip.ts";

const TOKEN = "relay-demo-token";
const BEARER = `Bearer ${TOKEN}`;
const CHALLENGE = 'Bearer realm="privacy-relay"';
const CLIENT_IP = "127.0.0.2";

/** The shipped config, as the relay's operators get it. */
const shipped: any = parse(readFileSync(join(repoRoot, "config", "privacy-relay.yaml"), "utf8"));

let pki: TestPki;
let echo: UdpEcho;
let tcpEcho: EchoServer;
/** Bob's client certificate: only the SAN DNS:bob.oxy.test. */
let bob: { chain: string; key: string };

// ---------------------------------------------------------------------------------------
// the relay

interface Relay {
  oxy: OxyProcess;
  /** The bound port: TCP, and QUIC on the same number. */
  port: number;
  /** `https://localhost:PORT`, for oxy-client. */
  proxy: string;
}

/** The shipped config on port 0 (the kernel picks), with the test certificate and
 * loopback echo targets allowed; `adjust` changes it further for one test. */
function relaySettings(adjust?: (settings: any) => void): any {
  const settings = structuredClone(shipped);
  assert.equal(settings.telemetry.listen, "127.0.0.1:9090");
  settings.telemetry.listen = "127.0.0.1:0";
  assert.equal(settings.endpoints.length, 1);
  const endpoint = settings.endpoints[0];
  assert.deepEqual(endpoint.listen, ["127.0.0.1:8443"]);
  assert.equal(endpoint.http.h3.listen, undefined, "HTTP/3 on the TCP listener's port");
  endpoint.listen = ["127.0.0.1:0"];
  endpoint.tls.certificates = [{ chain: pki.server.chain, key: pki.server.key }];
  settings.egress.allow = ["127.0.0.1/32"];
  adjust?.(settings);
  return settings;
}

async function startRelay(adjust?: (settings: any) => void): Promise<Relay> {
  const oxy = await OxyProcess.start({ binary: "privacy-relay", settings: relaySettings(adjust) });
  const port = oxy.port("relay", "tcp");
  assert.equal(oxy.port("relay", "quic"), port, "HTTP/3 shares the TCP listener's port number");
  return { oxy, port, proxy: `https://localhost:${port}` };
}

async function stopRelay(relay: Relay | undefined) {
  if (!relay) return;
  assert.deepEqual(await relay.oxy.stop(), { code: 0, signal: null }, relay.oxy.logs());
}

/** Runs `body` with a relay of its own, which must then stop cleanly (exit 0). After a
 * failure the relay is killed: a tunnel left open would hold up its drain. */
async function withRelay(adjust: ((settings: any) => void) | undefined, body: (relay: Relay) => Promise<void>): Promise<void> {
  const relay = await startRelay(adjust);
  try {
    await body(relay);
  } catch (e) {
    relay.oxy.signal("SIGKILL");
    throw e;
  }
  await stopRelay(relay);
}

/** Every complete JSON log line the relay wrote so far. */
function logEvents(oxy: OxyProcess): any[] {
  const lines = oxy.logs().split("\n");
  lines.pop(); // an incomplete last line, or ""
  return lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** The audit records in the relay's log stream (log events with target oxy::audit). */
function auditRecords(oxy: OxyProcess): any[] {
  return logEvents(oxy)
    .filter((e) => e.target === "oxy::audit")
    .map((e) => JSON.parse(e.record));
}

/** Waits until there are `count` audit records; returns them all. */
async function waitForAudit(oxy: OxyProcess, count: number, timeoutMs = 5_000): Promise<any[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = auditRecords(oxy);
    if (records.length >= count) return records;
    if (Date.now() > deadline) throw new Error(`${records.length} audit records, wanted ${count}:\n${oxy.logs()}`);
    await sleep(25);
  }
}

/** A counter sample, 0 when it does not exist yet. */
async function counter(oxy: OxyProcess, sample: string): Promise<number> {
  return (await oxy.metric(sample)) ?? 0;
}

const tunnels = (user: string) => `privacy_relay_tunnels_total{user="${user}"}`;
const refused = (reason: string) => `privacy_relay_refused_total{reason="${reason}"}`;

// ---------------------------------------------------------------------------------------
// node:http2 towards the relay

interface H2Options {
  localAddress?: string;
  cert?: { chain: string; key: string };
}

/** An HTTP/2 session over TLS to the relay (verified with the test CA). */
async function h2Session(port: number, options: H2Options = {}): Promise<ClientHttp2Session> {
  const tlsOptions = {
    host: "127.0.0.1",
    port,
    servername: "localhost",
    ALPNProtocols: ["h2"],
    ca: readFileSync(pki.ca),
    localAddress: options.localAddress,
    cert: options.cert ? readFileSync(options.cert.chain) : undefined,
    key: options.cert ? readFileSync(options.cert.key) : undefined,
  };
  const session = http2Connect(`https://localhost:${port}`, { createConnection: () => tlsConnect(tlsOptions) });
  await new Promise<void>((ok, fail) => {
    session.once("connect", () => ok());
    session.once("error", fail);
  });
  session.on("error", () => {});
  return session;
}

interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  stream: ClientHttp2Stream;
}

/** Sends a request and waits for the response head. */
function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, endStream = false): Promise<H2Response> {
  return new Promise((ok, fail) => {
    const stream = session.request(headers, { endStream });
    stream.on("response", (h) => ok({ status: Number(h[":status"]), headers: h, stream }));
    stream.on("error", fail);
  });
}

/** A CONNECT to `target` (`host:port`) with extra headers. */
function h2Connect(session: ClientHttp2Session, target: string, headers: OutgoingHttpHeaders = {}): Promise<H2Response> {
  return h2Request(session, { ":method": "CONNECT", ":authority": target, ...headers });
}

/** An extended CONNECT for CONNECT-UDP (RFC 9298) to 127.0.0.1:`port`. */
async function h2ConnectUdp(session: ClientHttp2Session, relayPort: number, port: number, headers: OutgoingHttpHeaders = {}): Promise<H2Response> {
  await extendedConnectAllowed(session);
  return h2Request(session, {
    ":method": "CONNECT",
    ":protocol": "connect-udp",
    ":scheme": "https",
    ":path": `/.well-known/masque/udp/127.0.0.1/${port}/`,
    ":authority": `localhost:${relayPort}`,
    "capsule-protocol": "?1",
    ...headers,
  });
}

/** The rest of a response's body. */
function body(stream: ClientHttp2Stream): Promise<string> {
  return new Promise((ok) => {
    let text = "";
    stream.setEncoding("utf8");
    stream.on("data", (d) => (text += d));
    stream.on("end", () => ok(text));
    stream.on("close", () => ok(text));
    stream.on("error", () => ok(text));
  });
}

/** Writes `text` into an open tunnel and reads as many bytes back. */
function roundTrip(stream: ClientHttp2Stream, text: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((ok, fail) => {
    let got = "";
    const timer = setTimeout(() => fail(new Error(`only ${JSON.stringify(got)} came back`)), timeoutMs);
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length >= text.length) {
        clearTimeout(timer);
        stream.off("data", onData);
        ok(got);
      }
    };
    stream.on("data", onData);
    stream.write(text);
  });
}

/** Ends an open tunnel from our side and waits for the stream to close. */
async function closeTunnel(stream: ClientHttp2Stream): Promise<void> {
  const closed = new Promise<void>((ok) => (stream.closed ? ok() : stream.once("close", () => ok())));
  stream.resume();
  stream.end();
  await closed;
}

// ---------------------------------------------------------------------------------------
// oxy-client CONNECT over HTTP/3 held open

/** `oxy-client connect` over HTTP/3 with stdin kept open: a TCP tunnel held open. */
class H3Tunnel {
  private out = "";
  private err = "";
  readonly exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    child.stdout!.on("data", (d) => (this.out += d));
    child.stderr!.on("data", (d) => (this.err += d));
    child.stdin!.on("error", () => {});
    this.exited = new Promise((ok) => child.on("exit", (code) => ok(code)));
  }

  static open(proxy: string, target: string, extra: string[] = []): H3Tunnel {
    const args = ["connect", "--proxy", proxy, "--ca", pki.ca, "--target", target, "--authorization", BEARER, ...extra];
    return new H3Tunnel(spawn(binaryPath("oxy-client"), args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "" } }));
  }

  /** Waits until the relay has answered 200 (the target is connected). */
  async opened(timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!/status 200/.test(this.err)) {
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`not opened: stderr ${JSON.stringify(this.err)}`);
      await sleep(20);
    }
  }

  /** Sends a line without waiting for anything. */
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  stdout(): string {
    return this.out;
  }

  /** Sends a line and waits until the output has it back. */
  async echo(line: string, timeoutMs = 5_000): Promise<void> {
    this.child.stdin!.write(`${line}\n`);
    const deadline = Date.now() + timeoutMs;
    while (!this.out.includes(`${line}\n`)) {
      if (Date.now() > deadline || this.child.exitCode !== null) {
        throw new Error(`no echo of ${line}: stdout ${JSON.stringify(this.out)}, stderr ${JSON.stringify(this.err)}`);
      }
      await sleep(20);
    }
  }

  /** Ends stdin: the tunnel half-closes, the echo closes back, the client exits. */
  async close(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  kill() {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

// ---------------------------------------------------------------------------------------
// fixtures

/** Waits until `check` holds (polling), failing with `what` after `timeoutMs`. */
async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen in time`);
    await sleep(10);
  }
}

/** A UDP socket that counts what reaches it (and never answers). `before()` sends a
 * datagram of its own and tells how many others came before it: anything sent to the
 * trap earlier has been read by then, so no fixed wait is needed to see it. */
async function udpTrap(family: "udp4" | "udp6", host: string) {
  const socket: DgramSocket = createSocket(family);
  /** The source port of each datagram, in order. */
  const from: number[] = [];
  socket.on("message", (_msg, rinfo) => from.push(rinfo.port));
  await new Promise<void>((ok) => socket.bind(0, host, ok));
  const port = socket.address().port;
  return {
    port,
    async before(): Promise<number> {
      const probe = createSocket(family);
      await new Promise<void>((ok) => probe.bind(0, host, ok));
      const me = probe.address().port;
      await new Promise<void>((ok, fail) => probe.send("probe", port, host, (e) => (e ? fail(e) : ok())));
      await until(() => from.includes(me), `the probe datagram to ${host}`);
      await new Promise<void>((ok) => probe.close(() => ok()));
      return from.indexOf(me);
    },
    close: () => new Promise<void>((ok) => socket.close(() => ok())),
  };
}

/** A TCP listener that counts connections (and never answers). `before()` connects
 * itself and tells how many connections were accepted before its own. */
async function tcpTrap(host: string) {
  const { createServer, connect } = await import("node:net");
  /** The remote port of each connection, in order of acceptance. */
  const from: number[] = [];
  const server = createServer((s) => {
    from.push(s.remotePort ?? 0);
    s.destroy();
  });
  await new Promise<void>((ok) => server.listen(0, host, ok));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    async before(): Promise<number> {
      const probe = connect({ port, host, localAddress: host });
      await new Promise<void>((ok, fail) => probe.once("connect", ok).once("error", fail));
      const me = probe.localPort ?? -1;
      await until(() => from.includes(me), `the probe connection to ${host}`);
      probe.destroy();
      return from.indexOf(me);
    },
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}

/** Issues a client certificate from the test CA with one subjectAltName. */
function issueClient(name: string, san: string): { chain: string; key: string } {
  const dir = pki.dir;
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=clientAuth\n`);
  run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`]);
  run(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", `${name}.pem`, "-extfile", `${name}.ext`]);
  return { chain: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

// ---------------------------------------------------------------------------------------

describe("privacy-relay", () => {
  /** The shipped config, adjusted only for ports, certificate and loopback targets. */
  let relay: Relay;

  before(async () => {
    pki = makePki();
    bob = issueClient("bob", "DNS:bob.oxy.test");
    [echo, tcpEcho] = await Promise.all([startUdpEcho(), startEchoServer()]);
    relay = await startRelay();
  });

  after(async () => {
    await stopRelay(relay);
    await Promise.all([echo?.close(), tcpEcho?.close()]);
  });

  test("the shipped config is a TLS relay with HTTP/3, JSON logs without client addresses and the demo user", () => {
    const endpoint = shipped.endpoints[0];
    assert.equal(endpoint.tls.enabled, true);
    assert.equal(endpoint.http.h3.enabled, true);
    // Tunnels only: CONNECT, CONNECT-UDP and CONNECT-IP are on; forwarding is off by default.
    assert.equal(endpoint.http.forward_proxy, undefined);
    assert.equal(endpoint.http.connect, true);
    assert.deepEqual(endpoint.http.connect_udp, { enabled: true });
    assert.deepEqual(endpoint.http.connect_ip, { enabled: true });
    assert.deepEqual(shipped.egress.allow, []);
    assert.equal(shipped.telemetry.log.format, "json");
    assert.equal(shipped.telemetry.log.client_addresses, false);
    assert.deepEqual(
      shipped.app.users.map((u: any) => u.name),
      ["demo"],
    );
  });

  // -------------------------------------------------------------------------------------
  // 1. CONNECT-UDP with a bearer token; 407 with a Bearer challenge without one

  test("CONNECT-UDP over HTTP/3 and HTTP/2 with the demo token echoes; no token or a wrong token is 407 with a Bearer challenge", async () => {
    const { oxy, port, proxy } = relay;
    const tunnelsBefore = await counter(oxy, tunnels("demo"));
    const auditBefore = auditRecords(oxy).length;
    for (const over of ["h3", "h2"] as const) {
      const summary = await udpLoad({ proxy, ca: pki.ca, over, target: `127.0.0.1:${echo.port}`, count: 20, authorization: BEARER });
      assert.equal(summary.status, 200, `over ${over}: ${JSON.stringify(summary)}`);
      assert.deepEqual([summary.sent, summary.received], [20, 20], `over ${over}: ${JSON.stringify(summary)}`);
    }
    assert.equal(await counter(oxy, tunnels("demo")), tunnelsBefore + 2);
    const flows = (await waitForAudit(oxy, auditBefore + 2)).slice(auditBefore);
    for (const r of flows) {
      assert.deepEqual([r.protocol, r.user, r.target, r.packets_up, r.packets_down], ["udp", "demo", `127.0.0.1:${echo.port}`, 20, 20], JSON.stringify(r));
    }

    // Without a token, or with one that is not a user's: 407, and no flow.
    const unauthenticated = await counter(oxy, refused("unauthenticated"));
    const echoClients = echo.clients.size;
    for (const over of ["h3", "h2"] as const) {
      for (const authorization of [undefined, "Bearer not-the-token", `Basic ${TOKEN}`]) {
        const summary = await udpLoad({ proxy, ca: pki.ca, over, target: `127.0.0.1:${echo.port}`, count: 5, authorization });
        assert.deepEqual(summary, { status: 407, sent: 0, received: 0 }, `over ${over} with ${authorization}`);
      }
    }
    assert.equal(await counter(oxy, refused("unauthenticated")), unauthenticated + 6);

    // The 407 asks for a bearer token (seen with node:http2), for CONNECT-UDP and CONNECT.
    const session = await h2Session(port);
    try {
      const answers = [
        await h2ConnectUdp(session, port, echo.port),
        await h2ConnectUdp(session, port, echo.port, { "proxy-authorization": "Bearer not-the-token" }),
        await h2Connect(session, `127.0.0.1:${tcpEcho.port}`),
        await h2Connect(session, `127.0.0.1:${tcpEcho.port}`, { authorization: "Bearer not-the-token" }),
      ];
      for (const [i, answer] of answers.entries()) {
        assert.equal(answer.status, 407, `request ${i}`);
        assert.equal(answer.headers["proxy-authenticate"], CHALLENGE, `request ${i}: ${JSON.stringify(answer.headers)}`);
        answer.stream.close();
      }
    } finally {
      session.destroy();
    }
    assert.equal(await counter(oxy, refused("unauthenticated")), unauthenticated + 10);
    assert.equal(echo.clients.size, echoClients, "no refused flow reached the echo");
    assert.equal(auditRecords(oxy).length, auditBefore + 2, "refused requests open no tunnel");
    assert.equal(await counter(oxy, tunnels("demo")), tunnelsBefore + 2);
  });

  // -------------------------------------------------------------------------------------
  // 2. CONNECT over HTTP/2 and HTTP/3; anything but a tunnel is 405

  test("CONNECT over HTTP/2 (Proxy-Authorization or Authorization) and over HTTP/3 carries TCP; a GET with a valid token is 405", async () => {
    const { oxy, port, proxy } = relay;
    const tunnelsBefore = await counter(oxy, tunnels("demo"));
    const connectionsBefore = tcpEcho.connections;
    const auditBefore = auditRecords(oxy).length;

    const session = await h2Session(port);
    try {
      for (const header of ["proxy-authorization", "authorization"]) {
        const tunnel = await h2Connect(session, `127.0.0.1:${tcpEcho.port}`, { [header]: BEARER });
        assert.equal(tunnel.status, 200, `with ${header}`);
        const text = `hello over h2 with ${header}\n`;
        assert.equal(await roundTrip(tunnel.stream, text), text);
        await closeTunnel(tunnel.stream);
      }

      // Authenticated, but not a tunnel: 405. Unauthenticated comes first: 407.
      const notATunnel = await counter(oxy, refused("not_a_tunnel"));
      const get = await h2Request(session, { ":method": "GET", ":path": "/", ":authority": `localhost:${port}`, "proxy-authorization": BEARER }, true);
      assert.equal(get.status, 405);
      assert.match(await body(get.stream), /CONNECT, CONNECT-UDP and CONNECT-IP only/);
      const post = await h2Request(session, { ":method": "POST", ":path": "/x", ":authority": `localhost:${port}`, authorization: BEARER }, true);
      assert.equal(post.status, 405);
      post.stream.close();
      assert.equal(await counter(oxy, refused("not_a_tunnel")), notATunnel + 2);
      const anonymous = await h2Request(session, { ":method": "GET", ":path": "/", ":authority": `localhost:${port}` }, true);
      assert.equal(anonymous.status, 407);
      assert.equal(anonymous.headers["proxy-authenticate"], CHALLENGE);
      anonymous.stream.close();
    } finally {
      session.destroy();
    }

    const h3 = await runClient(["connect", "--proxy", proxy, "--ca", pki.ca, "--target", `127.0.0.1:${tcpEcho.port}`, "--authorization", BEARER], {
      input: "hello over h3\n",
      timeoutMs: 10_000,
    });
    assert.equal(h3.code, 0, h3.stderr);
    assert.match(h3.stderr, /status 200/);
    assert.equal(h3.stdout, "hello over h3\n");
    const h3Anonymous = await runClient(["connect", "--proxy", proxy, "--ca", pki.ca, "--target", `127.0.0.1:${tcpEcho.port}`], { input: "x\n", timeoutMs: 10_000 });
    assert.notEqual(h3Anonymous.code, 0);
    assert.match(h3Anonymous.stderr, /status 407/);
    const h3Get = await runClient(["get", `https://localhost:${port}/`, "--ca", pki.ca], { timeoutMs: 10_000 });
    assert.match(h3Get.stderr, /status 407/, "a GET over HTTP/3 without a token");

    assert.equal(tcpEcho.connections, connectionsBefore + 3, "the three tunnels, nothing else, reached the echo");
    assert.equal(await counter(oxy, tunnels("demo")), tunnelsBefore + 3);
    const records = (await waitForAudit(oxy, auditBefore + 3)).slice(auditBefore);
    for (const r of records) {
      assert.deepEqual([r.protocol, r.user, r.target, r.resolved], ["tcp", "demo", `127.0.0.1:${tcpEcho.port}`, `127.0.0.1:${tcpEcho.port}`], JSON.stringify(r));
      assert.equal(r.bytes_up, r.bytes_down, JSON.stringify(r));
      assert.ok(r.bytes_up > 0, JSON.stringify(r));
    }
  });

  test("CONNECT over HTTP/3: the target's bytes reach the client while the tunnel stays open", async () => {
    const tunnel = H3Tunnel.open(relay.proxy, `127.0.0.1:${tcpEcho.port}`);
    try {
      await tunnel.opened();
      // An interactive exchange: each line must come back before the client sends more.
      await tunnel.echo("first line");
      await tunnel.echo("second line");
      assert.equal(await tunnel.close(), 0);
      assert.equal(tunnel.stdout(), "first line\nsecond line\n");
    } finally {
      // Ended, not killed: a QUIC connection left open would hold up the relay's drain.
      await tunnel.close();
    }
  });

  // -------------------------------------------------------------------------------------
  // 3. Users known by a client certificate

  test("mTLS: alice's client certificate opens a tunnel without a token; no certificate and no token is 407", async () => {
    await withRelay((s) => {
      s.endpoints[0].tls.client_auth = "optional";
      s.endpoints[0].tls.client_ca = pki.ca;
      s.app.users.push({ name: "alice", certificate_name: "email:alice@oxy.test" });
    }, async (mtls) => {
      const alice = await h2Session(mtls.port, { cert: pki.client });
      try {
        const tunnel = await h2Connect(alice, `127.0.0.1:${tcpEcho.port}`);
        assert.equal(tunnel.status, 200);
        assert.equal(await roundTrip(tunnel.stream, "alice was here\n"), "alice was here\n");
        await closeTunnel(tunnel.stream);
      } finally {
        alice.destroy();
      }
      assert.equal(await counter(mtls.oxy, tunnels("alice")), 1);
      const [record] = await waitForAudit(mtls.oxy, 1);
      assert.deepEqual([record.protocol, record.user, record.target], ["tcp", "alice", `127.0.0.1:${tcpEcho.port}`], JSON.stringify(record));

      const anonymous = await h2Session(mtls.port);
      try {
        const refusedTunnel = await h2Connect(anonymous, `127.0.0.1:${tcpEcho.port}`);
        assert.equal(refusedTunnel.status, 407);
        assert.equal(refusedTunnel.headers["proxy-authenticate"], CHALLENGE);
        refusedTunnel.stream.close();
        // The token still works on the same endpoint.
        const demo = await h2Connect(anonymous, `127.0.0.1:${tcpEcho.port}`, { "proxy-authorization": BEARER });
        assert.equal(demo.status, 200);
        await closeTunnel(demo.stream);
      } finally {
        anonymous.destroy();
      }
      assert.equal(await counter(mtls.oxy, refused("unauthenticated")), 1);
      const records = await waitForAudit(mtls.oxy, 2);
      assert.deepEqual(
        records.map((r) => r.user),
        ["alice", "demo"],
      );
    });
  });

  test("mTLS: a user known by a DNS name (certificate_name dns:bob.oxy.test: SANs match in any case) is authenticated", async () => {
    await withRelay((s) => {
      s.endpoints[0].tls.client_auth = "optional";
      s.endpoints[0].tls.client_ca = pki.ca;
      s.app.users.push({ name: "bob", certificate_name: "dns:bob.oxy.test" });
    }, async (mtls) => {
      const session = await h2Session(mtls.port, { cert: bob });
      try {
        const tunnel = await h2Connect(session, `127.0.0.1:${tcpEcho.port}`);
        assert.equal(tunnel.status, 200, "bob's certificate (SAN DNS:bob.oxy.test) did not authenticate him");
        await closeTunnel(tunnel.stream);
      } finally {
        session.destroy();
      }
      const [record] = await waitForAudit(mtls.oxy, 1);
      assert.equal(record.user, "bob");
    });
  });

  // -------------------------------------------------------------------------------------
  // 4. Public destinations only

  test("CONNECT-UDP to private and loopback destinations outside egress.allow is 403 over HTTP/3 and HTTP/2; nothing reaches them", async () => {
    const { oxy, port, proxy } = relay;
    const trap4 = await udpTrap("udp4", CLIENT_IP);
    const trap6 = await udpTrap("udp6", "::1");
    const tcp4 = await tcpTrap(CLIENT_IP);
    const tcp6 = await tcpTrap("::1");
    try {
      const auditBefore = auditRecords(oxy).length;
      const forbidden = async (version: string) =>
        counter(oxy, `oxy_http_requests_total{endpoint="relay",method="CONNECT",status="403",version="${version}"}`);
      const [h3Before, h2Before] = [await forbidden("3"), await forbidden("2")];
      const echoClients = echo.clients.size;
      const targets = ["10.0.0.1:53", "192.168.1.1:53", `${CLIENT_IP}:${trap4.port}`, `[::1]:${trap6.port}`];
      for (const over of ["h3", "h2"] as const) {
        for (const target of targets) {
          const summary = await udpLoad({ proxy, ca: pki.ca, over, target, count: 5, authorization: BEARER });
          assert.deepEqual(summary, { status: 403, sent: 0, received: 0 }, `${target} over ${over}`);
        }
      }
      // CONNECT (TCP) too.
      const session = await h2Session(port);
      try {
        for (const target of [`${CLIENT_IP}:${tcp4.port}`, `[::1]:${tcp6.port}`]) {
          const answer = await h2Connect(session, target, { "proxy-authorization": BEARER });
          assert.equal(answer.status, 403, target);
          answer.stream.close();
        }
      } finally {
        session.destroy();
      }
      assert.equal(await forbidden("3"), h3Before + 4);
      assert.equal(await forbidden("2"), h2Before + 6);

      const records = (await waitForAudit(oxy, auditBefore + 10)).slice(auditBefore);
      assert.equal(records.length, 10, JSON.stringify(records));
      for (const r of records) {
        assert.match(r.close_reason, /^egress denied: .* is a (private|loopback) address/, JSON.stringify(r));
        assert.deepEqual([r.user, r.resolved, r.bytes_up, r.packets_up], ["demo", null, 0, 0], JSON.stringify(r));
      }
      assert.deepEqual(
        records.slice(0, 8).map((r) => r.target),
        [...targets, ...targets],
      );
      // Each trap's own probe is the first thing to reach it.
      assert.equal(await trap4.before(), 0, `something reached ${CLIENT_IP}`);
      assert.equal(await trap6.before(), 0, "something reached [::1]");
      assert.equal(await tcp4.before(), 0, `something connected to ${CLIENT_IP}`);
      assert.equal(await tcp6.before(), 0, "something connected to [::1]");
      assert.equal(echo.clients.size, echoClients);

      // The allowed loopback echo still works: the policy, not the relay, refused them.
      const ok = await udpLoad({ proxy, ca: pki.ca, target: `127.0.0.1:${echo.port}`, count: 5, authorization: BEARER });
      assert.deepEqual([ok.status, ok.received], [200, 5]);
    } finally {
      await Promise.all([trap4.close(), trap6.close(), tcp4.close(), tcp6.close()]);
    }
  });

  // -------------------------------------------------------------------------------------
  // 5. Per-user tunnel limit

  test("max_tunnels_per_user: 2 held tunnels (CONNECT and CONNECT-UDP, h3 and h2) leave none for a third (429) until one closes", async () => {
    const limit = (s: any) => {
      s.app.max_tunnels_per_user = 2;
    };
    await withRelay(limit, async ({ oxy, port, proxy }) => {
      const udpTarget = `127.0.0.1:${echo.port}`;
      const tcpTarget = `127.0.0.1:${tcpEcho.port}`;
      const held: { kill: () => unknown }[] = [];
      const session = await h2Session(port);
      try {
        // Tunnels that ended or never opened give their slot back: refused by the egress
        // policy, a target that refuses the connection, completed flows.
        for (const over of ["h3", "h2"] as const) {
          for (const target of [`[::1]:${echo.port}`, "10.0.0.1:53"]) {
            const denied = await udpLoad({ proxy, ca: pki.ca, over, target, count: 1, authorization: BEARER });
            assert.equal(denied.status, 403);
          }
        }
        const closedPort = await refusingTcpPort();
        try {
          const unreachable = await h2Connect(session, `127.0.0.1:${closedPort.port}`, { "proxy-authorization": BEARER });
          assert.equal(unreachable.status, 502);
          unreachable.stream.close();
        } finally {
          await closedPort.close();
        }
        for (const over of ["h3", "h2"] as const) {
          const done = await udpLoad({ proxy, ca: pki.ca, over, target: udpTarget, count: 5, authorization: BEARER });
          assert.deepEqual([done.status, done.received], [200, 5]);
        }
        assert.equal(await counter(oxy, refused("tunnel_limit")), 0);
        let audited = (await waitForAudit(oxy, 7)).length;

        const limitRefusals = async () => counter(oxy, refused("tunnel_limit"));
        /** The third tunnel of each kind that `kinds` names is refused with 429. */
        const third = async (kinds: ("h3-udp" | "h2-udp" | "h3-tcp" | "h2-tcp")[]) => {
          for (const kind of kinds) {
            if (kind === "h3-udp" || kind === "h2-udp") {
              const over = kind === "h3-udp" ? "h3" : "h2";
              const summary = await udpLoad({ proxy, ca: pki.ca, over, target: udpTarget, count: 1, authorization: BEARER });
              assert.deepEqual(summary, { status: 429, sent: 0, received: 0 }, kind);
            } else if (kind === "h3-tcp") {
              const run = await runClient(["connect", "--proxy", proxy, "--ca", pki.ca, "--target", tcpTarget, "--authorization", BEARER], { input: "x\n", timeoutMs: 10_000 });
              assert.notEqual(run.code, 0);
              assert.match(run.stderr, /status 429/, kind);
            } else {
              const answer = await h2Connect(session, tcpTarget, { "proxy-authorization": BEARER });
              assert.equal(answer.status, 429, kind);
              assert.match(await body(answer.stream), /demo has too many tunnels open/);
            }
          }
        };
        /** Waits for the audit record of a tunnel that just closed. */
        const closedOne = async () => {
          audited = (await waitForAudit(oxy, audited + 1)).length;
        };

        // Held: CONNECT-UDP over h3 and CONNECT over h2.
        const a = UdpSession.start({ proxy, ca: pki.ca, over: "h3", target: udpTarget, authorization: BEARER });
        held.push(a);
        a.send("a1");
        await a.waitForLine("a1");
        const b = await h2Connect(session, tcpTarget, { "proxy-authorization": BEARER });
        held.push({ kill: () => b.stream.close() });
        assert.equal(b.status, 200);
        assert.equal(await roundTrip(b.stream, "b1\n"), "b1\n");
        await third(["h2-udp", "h3-tcp", "h2-tcp", "h3-udp"]);
        assert.equal(await limitRefusals(), 4);

        // The CONNECT closes: its slot is free for a CONNECT-UDP over h2.
        await closeTunnel(b.stream);
        await closedOne();
        const c = UdpSession.start({ proxy, ca: pki.ca, over: "h2", target: udpTarget, authorization: BEARER });
        held.push(c);
        c.send("c1");
        await c.waitForLine("c1");
        a.send("a2");
        await a.waitForLine("a2");
        await third(["h2-tcp", "h3-udp"]);
        assert.equal(await limitRefusals(), 6);

        // The h3 flow closes: its slot is free for a CONNECT over h3.
        a.endInput();
        assert.equal(await a.exited, 0, a.stderr());
        await closedOne();
        const d = H3Tunnel.open(proxy, tcpTarget);
        held.push(d);
        await d.opened();
        // (Not a round trip: over HTTP/3 the target's bytes wait for the tunnel's next
        // write or its end; see the CONNECT over HTTP/3 test above.)
        d.send("d1");
        await third(["h3-udp", "h2-tcp"]);
        assert.equal(await limitRefusals(), 8);

        // Both close: two new tunnels open.
        await c.kill();
        await closedOne();
        assert.equal(await d.close(), 0);
        assert.equal(d.stdout(), "d1\n");
        await closedOne();
        const e = await h2Connect(session, tcpTarget, { "proxy-authorization": BEARER });
        assert.equal(e.status, 200);
        assert.equal(await roundTrip(e.stream, "e1\n"), "e1\n");
        const f = await udpLoad({ proxy, ca: pki.ca, over: "h3", target: udpTarget, count: 5, authorization: BEARER });
        assert.deepEqual([f.status, f.received], [200, 5]);
        await closeTunnel(e.stream);

        assert.equal(await limitRefusals(), 8);
        // 4 denied + 1 unreachable + 2 done + a, b, c, d + e, f: every slot taken is counted.
        assert.equal(await counter(oxy, tunnels("demo")), 13);
      } finally {
        for (const h of held) h.kill();
        session.destroy();
      }
    });
  });

  test("CONNECT-IP over HTTP/2 for the demo user carries UDP; no token is 407; each stream takes one of the user's tunnel slots", async () => {
    await withRelay((s: any) => (s.app.max_tunnels_per_user = 1), async ({ oxy, port }) => {
      const open = (headers: Record<string, string>) => openConnectIp({ over: "h2", port, ca: pki.ca, headers });
      const anonymous = await open({});
      try {
        await anonymous.closed();
        assert.equal(anonymous.status, 407);
        assert.match(anonymous.headers["proxy-authenticate"] ?? "", /^Bearer /);
      } finally {
        anonymous.destroy();
      }
      const first = await open({ "proxy-authorization": BEARER });
      try {
        assert.equal(first.status, 200, first.body);
        await first.initial();
        const payload = Buffer.from("ip through the relay");
        first.sendPacket(udpPacket({ src: first.address(4), dst: "127.0.0.1", srcPort: 41000, dstPort: echo.port, payload }));
        const echoed = await first.nextPacket((p) => p.udp?.data.equals(payload) === true, "the echo");
        assert.equal(echoed.src, "127.0.0.1");
        // The user's only slot is held by this stream.
        const second = await open({ "proxy-authorization": BEARER });
        try {
          await second.closed();
          assert.equal(second.status, 429);
          assert.match(second.body, /demo has too many tunnels open/);
        } finally {
          second.destroy();
        }
        await first.end();
      } finally {
        first.destroy();
      }
      // The slot comes back once the stream has ended (a moment after its audit record):
      // until then a new stream is refused (429), retried with a pause.
      await untilValue(async () => {
        const third = await open({ "proxy-authorization": BEARER });
        try {
          if (third.status === 200) {
            await third.initial();
            await third.end();
            return true;
          }
          await third.closed();
          assert.equal(third.status, 429, third.body);
          return undefined;
        } finally {
          third.destroy();
        }
      }, "the slot to come back (the slot never came back)");
      // The first and the third streams' records at least, before looking at them (every()
      // holds on an empty list).
      const sessions = await untilValue(() => {
        const records = auditRecords(oxy).filter((r) => r.protocol === "connect-ip");
        return records.length >= 2 ? records : undefined;
      }, () => `two connect-ip audit records:\n${JSON.stringify(auditRecords(oxy))}`);
      assert.ok(sessions.every((r) => r.user === "demo" && r.client === undefined), JSON.stringify(sessions));
    });
  });

  // -------------------------------------------------------------------------------------
  // 6. No client addresses in logs or audit records

  test(`clients from ${CLIENT_IP}: nothing in the debug logs or audit records names them`, async () => {
    const debug = (s: any) => {
      s.telemetry.log.level = "debug";
    };
    const max: number = shipped.app.max_tunnels_per_user;
    await withRelay(debug, async ({ oxy, port, proxy }) => {
      const udp = (over: "h3" | "h2", target: string, authorization?: string) =>
        udpLoad({ proxy, ca: pki.ca, over, target, count: 5, authorization, bind: CLIENT_IP });
      for (const over of ["h3", "h2"] as const) {
        const ok = await udp(over, `127.0.0.1:${echo.port}`, BEARER);
        assert.deepEqual([ok.status, ok.received], [200, 5], over);
        assert.equal((await udp(over, `127.0.0.1:${echo.port}`)).status, 407, over);
        assert.equal((await udp(over, `127.0.0.1:${echo.port}`, "Bearer wrong")).status, 407, over);
        assert.equal((await udp(over, "10.0.0.1:53", BEARER)).status, 403, over);
      }
      const h3 = await runClient(
        ["connect", "--proxy", proxy, "--ca", pki.ca, "--target", `127.0.0.1:${tcpEcho.port}`, "--authorization", BEARER, "--bind", CLIENT_IP],
        { input: "private\n", timeoutMs: 10_000 },
      );
      assert.equal(h3.stdout, "private\n", h3.stderr);
      const h3Refused = await runClient(["connect", "--proxy", proxy, "--ca", pki.ca, "--target", `127.0.0.1:${tcpEcho.port}`, "--bind", CLIENT_IP], {
        input: "x\n",
        timeoutMs: 10_000,
      });
      assert.match(h3Refused.stderr, /status 407/);

      const session = await h2Session(port, { localAddress: CLIENT_IP });
      try {
        assert.equal(session.socket.localAddress, CLIENT_IP);
        assert.equal((await h2Connect(session, `127.0.0.1:${tcpEcho.port}`)).status, 407);
        const get = await h2Request(session, { ":method": "GET", ":path": "/", ":authority": `localhost:${port}`, "proxy-authorization": BEARER }, true);
        assert.equal(get.status, 405);
        // The shipped limit's worth of tunnels, and one more: 429.
        const open: H2Response[] = [];
        for (let i = 0; i < max; i++) {
          const t = await h2Connect(session, `127.0.0.1:${tcpEcho.port}`, { "proxy-authorization": BEARER });
          assert.equal(t.status, 200, `tunnel ${i}`);
          assert.equal(await roundTrip(t.stream, `t${i}\n`), `t${i}\n`);
          open.push(t);
        }
        const over = await h2Connect(session, `127.0.0.1:${tcpEcho.port}`, { "proxy-authorization": BEARER });
        assert.equal(over.status, 429);
        for (const t of open) await closeTunnel(t.stream);
      } finally {
        session.destroy();
      }
      assert.equal(await counter(oxy, refused("unauthenticated")), 6);
      assert.equal(await counter(oxy, refused("not_a_tunnel")), 1);
      assert.equal(await counter(oxy, refused("tunnel_limit")), 1);

      // 2 flows + 2 refused flows + the h3 CONNECT + the held CONNECTs.
      const expected = 5 + max;
      const records = await waitForAudit(oxy, expected);
      // Stopped first, so that every line it would write (a connection ending) is in.
      assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
      const logs = oxy.logs();
      assert.ok(logs.includes('"level":"DEBUG"'), "the relay logged at debug level");
      assert.ok(!logs.includes(CLIENT_IP), `the logs name the client:\n${logs.split("\n").filter((l) => l.includes(CLIENT_IP)).join("\n")}`);
      assert.equal(records.length, expected, JSON.stringify(records));
      for (const r of records) {
        assert.equal(r.user, "demo", JSON.stringify(r));
        assert.ok(!("client" in r) && !("original_client" in r), JSON.stringify(r));
      }
    });
  });

  test("the shipped config with telemetry.log.client_addresses: true is a settings error (exit 2), also for --check-config", async () => {
    const settings = relaySettings((s) => {
      s.telemetry.log.client_addresses = true;
    });
    const path = writeConfig(settings);
    const run = await runToExit("privacy-relay", ["--config", path]);
    assert.equal(run.code, 2, run.stdout + run.stderr);
    assert.match(run.stderr, /telemetry\.log\.client_addresses/);
    const checked = await runToExit("privacy-relay", ["--check-config", "--config", path]);
    assert.equal(checked.code, 2, checked.stdout + checked.stderr);
    assert.match(checked.stderr, /telemetry\.log\.client_addresses/);
    assert.doesNotMatch(run.stderr, /panicked/);
  });
});
