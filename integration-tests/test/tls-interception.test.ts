// TLS interception inside tunnels the tunnel hook decapsulates (the fixture app's
// `tunnel_decapsulate`): Oxy answers the client's TLS with a leaf it mints for the
// server name, signed by the endpoint's `tls_interception` CA, serves the HTTP inside
// through the hooks (which see the inner TLS facts) and sends each request to the target
// over TLS, verifying the target's certificate against `http.client.ca_file`. CONNECT
// tunnels and `protocol: tcp` connections; a ClientHello the app declines, and bytes
// that are neither HTTP nor TLS, are pumped untouched. Audit records and access log
// lines tie the requests to their tunnel; 1,000 requests over 50 names mint 50 leaves;
// a bad CA is a settings error. QUIC on UDP flows (`protocol: udp` endpoints and
// CONNECT-UDP over HTTP/2 and HTTP/3): Oxy's own HTTP/3 server answers the client's QUIC
// handshake with a minted leaf and sends each request to the target over TCP TLS; a
// datagram that is not QUIC, a QUIC Initial the app declines, and QUIC on an endpoint
// without `tls_interception` are pumped as UDP.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect as tlsConnect, createServer as createTlsServer, type ConnectionOptions, type TLSSocket } from "node:tls";
import { createSocket } from "node:dgram";
import { promisify } from "node:util";
import { auditPath, auditWhere, readAudit } from "../lib/audit.ts";
import { makeInterceptionCa, makePki, type InterceptionCa, type TestPki } from "../lib/certs.ts";
import { curl, lastResponse } from "../lib/curl.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { startHttpsOrigin, type HttpsOrigin } from "../lib/https-origin.ts";
import { h3Get, type H3Response } from "../lib/interop.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, runToExit, until, writeConfig } from "../lib/oxy.ts";
import { startUdpRelay } from "../lib/oxy-client.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";

const run = promisify(execFile);

/** The fixture's endpoint settings for every endpoint here: decapsulate every TCP
 * tunnel and UDP flow, block `/blocked...`, answer `/tls-facts` itself, decline to intercept
 * `pinned.oxy.test`. */
const fixtureApp = {
  tunnel_decapsulate: true,
  block_path_prefix: "/blocked",
  tls_facts_path: "/tls-facts",
  intercept_pass_sni: "pinned.oxy.test",
};

/** The 50 names of the load test, all on loopback and covered by `*.load.oxy.test`. */
const loadNames = Array.from({ length: 50 }, (_, i) => `n${i}.load.oxy.test`);

/** What `/tls-facts` answers. */
interface TlsFacts {
  intercepted: boolean;
  sni: string | null;
  alpn: string | null;
  version: string | null;
}

/** The sum of the samples of metric `name` whose labels include `labels` (in any order);
 * 0 when there is none (a counter not yet touched). */
async function sample(oxy: OxyProcess, name: string, labels: Record<string, string>): Promise<number> {
  const { body } = await oxy.telemetry("/metrics");
  let sum = 0;
  for (const line of body.split("\n")) {
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** Waits until `sample(oxy, name, labels)` is at least `value`; returns it. */
function sampleReaches(oxy: OxyProcess, name: string, labels: Record<string, string>, value: number, timeoutMs = 5_000): Promise<number> {
  let last = 0;
  return until(
    async () => {
      last = await sample(oxy, name, labels);
      return last >= value ? last : undefined;
    },
    () => `${name}${JSON.stringify(labels)} >= ${value} (it is ${last})`,
    timeoutMs,
  );
}

/** The process's JSON log lines (`telemetry.log.format: json`), parsed. */
function jsonLogs(oxy: OxyProcess): any[] {
  return oxy
    .logs()
    .split("\n")
    .flatMap((line) => {
      if (!line.startsWith("{")) return [];
      try {
        return [JSON.parse(line)];
      } catch {
        return [];
      }
    });
}

/** The access log line (`oxy::access`, `request`) of the request whose URI ends with
 * `path`, once it is written. */
function accessLine(oxy: OxyProcess, path: string): Promise<any> {
  return until(
    () => jsonLogs(oxy).find((r) => r.target === "oxy::access" && r.message === "request" && String(r.uri).endsWith(path)),
    `the access log line of ${path}`,
  );
}

/** The tunnel id an access log line carries: an event field, or a field of its span. */
function tunnelIdOf(line: any): unknown {
  return line.tunnel_id ?? line.span?.tunnel_id;
}

/** Opens a CONNECT tunnel to `authority` through the proxy on 127.0.0.1:`port`; resolves
 * with the socket once the proxy answered 200. */
function openTunnel(port: number, authority: string): Promise<Socket> {
  return new Promise((ok, fail) => {
    const req = httpRequest({ host: "127.0.0.1", port, method: "CONNECT", path: authority, agent: false, headers: { host: authority } });
    req.on("connect", (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return fail(new Error(`CONNECT ${authority} answered ${res.statusCode}`));
      }
      if (head.length > 0) socket.unshift(head);
      ok(socket);
    });
    req.on("error", fail);
    req.end();
  });
}

/** A TLS client handshake with `options` (over `options.socket` when given). */
function tlsHandshake(options: ConnectionOptions): Promise<TLSSocket> {
  return new Promise((ok, fail) => {
    const socket = tlsConnect(options, () => ok(socket));
    socket.once("error", fail);
  });
}

/** The leaf certificate the peer of `socket` showed. */
function peerLeaf(socket: TLSSocket): X509Certificate {
  return new X509Certificate(socket.getPeerCertificate(true).raw);
}

/** The time an X509Certificate validity string (`Mar  9 12:00:00 2026 GMT`) names, in ms. */
function when(validity: string): number {
  const ms = Date.parse(validity);
  assert.ok(Number.isFinite(ms), `not a time: ${validity}`);
  return ms;
}

const HOUR = 3_600_000;
const MINUTE = 60_000;

describe("TLS interception with the fixture app", () => {
  /** The origins' PKI: the server certificate covers every name the tests use but
   * `mismatch.oxy.test`, and 127.0.0.1. */
  let pki: TestPki;
  /** A PKI Oxy does not trust. */
  let stranger: TestPki;
  let ca: InterceptionCa;
  let origin: HttpsOrigin;
  /** An HTTPS origin whose certificate is from `stranger`. */
  let untrusted: HttpsOrigin;
  /** A plain HTTP origin. */
  let plain: Origin;
  let echo: EchoServer;
  let dns: DnsServer;
  let audit: string;
  let oxy: OxyProcess;
  /** curl's arguments to use the `proxy` endpoint. */
  let proxy: string[];
  /** curl's arguments to trust the interception CA only. */
  let trustInterception: string[];

  before(async () => {
    pki = makePki(["origin.oxy.test", "pinned.oxy.test", "audited.oxy.test", "*.load.oxy.test"]);
    stranger = makePki(["untrusted.oxy.test"], [], "Oxy Stranger CA");
    ca = makeInterceptionCa();
    origin = await startHttpsOrigin(pki.server, "origin");
    untrusted = await startHttpsOrigin(stranger.server, "untrusted");
    plain = await startOrigin();
    echo = await startEchoServer();
    const loopback = ["127.0.0.1"];
    dns = await startDnsServer(
      Object.fromEntries(
        ["origin.oxy.test", "pinned.oxy.test", "audited.oxy.test", "untrusted.oxy.test", "mismatch.oxy.test", "plain.oxy.test", ...loadNames].map((n) => [n, loopback]),
      ),
    );
    audit = auditPath();
    const interception = { ca_chain: ca.cert, ca_key: ca.key };
    const client = { ca_file: pki.ca };
    oxy = await OxyProcess.start({
      binary: "fixture-app",
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        dns: { groups: [{ name: "test", servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
        telemetry: { audit: { path: audit }, log: { format: "json", level: "info" } },
        endpoints: [
          {
            name: "proxy",
            listen: ["127.0.0.1:0"],
            http: { connect: true, client },
            tls_interception: { ...interception, leaf_lifetime: "6h" },
            app: fixtureApp,
          },
          {
            name: "l4",
            protocol: "tcp",
            listen: ["127.0.0.1:0"],
            tcp: { target: `origin.oxy.test:${origin.port}` },
            http: { client },
            // Longer than the CA lives: the leaves end with the CA.
            tls_interception: { ...interception, leaf_lifetime: "720h" },
            app: fixtureApp,
          },
          {
            name: "load",
            listen: ["127.0.0.1:0"],
            http: { connect: true, client },
            tls_interception: { ...interception, leaf_lifetime: "24h", cache_size: 1000 },
            app: fixtureApp,
          },
        ],
      },
    });
    proxy = ["-x", oxy.url("proxy")];
    trustInterception = ["--cacert", ca.cert];
  });

  after(async () => {
    await Promise.all([origin?.close(), untrusted?.close(), plain?.close(), echo?.close(), dns?.close()]);
  });

  const intercepted = (endpoint: string) => sample(oxy, "oxy_tls_interceptions_total", { endpoint, outcome: "intercepted" });

  /** GET `url` through the proxy trusting the interception CA; the parsed `/tls-facts`. */
  async function tlsFacts(url: string, args: string[] = []): Promise<TlsFacts> {
    const r = await curl([...proxy, ...trustInterception, ...args, url]);
    assert.equal(r.status, 200, r.stderr + r.body);
    return JSON.parse(r.body);
  }

  test("CONNECT to an HTTPS origin is intercepted: the request reaches the origin through the hooks, over TLS", async () => {
    const start = await intercepted("proxy");
    const url = `https://origin.oxy.test:${origin.port}`;

    const r = await curl(["-D", "-", ...proxy, ...trustInterception, "-H", "x-test: through interception", `${url}/hello?x=1`]);
    assert.equal(r.status, 200, r.stderr + oxy.logs().slice(-3000));
    const { headers, body } = lastResponse(r.body);
    const answer = JSON.parse(body);
    assert.deepEqual([answer.origin, answer.method, answer.path], ["origin", "GET", "/hello?x=1"]);
    assert.equal(headers["x-origin"], "origin");
    assert.equal(headers["x-fixture-response"], "seen", "the response went through the response hook");
    // The response hook saw the origin's own certificate, which Oxy verified.
    const originCert = new X509Certificate(readFileSync(pki.server.chain));
    assert.equal(headers["x-upstream-cert-sha256"], originCert.fingerprint256.replaceAll(":", "").toLowerCase());
    assert.match(headers["x-upstream-tls-version"] ?? "", /^TLSv1\.[23]$/);
    const hello = origin.seen.find((s) => s.path === "/hello?x=1");
    assert.ok(hello, JSON.stringify(origin.started));
    assert.equal(hello.method, "GET");
    assert.equal(hello.headers["x-test"], "through interception");
    assert.equal(hello.headers["x-fixture-request"], "seen", "the request went through the request hook");
    assert.equal(hello.authority, `origin.oxy.test:${origin.port}`);

    // HTTP/2 with the client. The fixture has an egress hook, so each request gets a
    // connection of its own to the origin, which speaks HTTP/1.1 over TLS.
    const h2 = await curl([...proxy, ...trustInterception, "--http2", `${url}/h2`]);
    assert.deepEqual([h2.status, h2.version], [200, "2"], h2.stderr);
    const seenH2 = origin.seen.find((s) => s.path === "/h2");
    assert.deepEqual([seenH2?.httpVersion, seenH2?.alpnProtocol], ["1.1", "http/1.1"]);
    assert.deepEqual(await tlsFacts(`${url}/tls-facts`, ["--http2"]), { intercepted: true, sni: "origin.oxy.test", alpn: "h2", version: "TLSv1.3" });

    // HTTP/1.1 with the client.
    const h1 = await curl([...proxy, ...trustInterception, "--http1.1", `${url}/h1`]);
    assert.deepEqual([h1.status, h1.version], [200, "1.1"], h1.stderr);
    assert.ok(origin.seen.some((s) => s.path === "/h1"));
    assert.deepEqual(await tlsFacts(`${url}/tls-facts`, ["--http1.1"]), { intercepted: true, sni: "origin.oxy.test", alpn: "http/1.1", version: "TLSv1.3" });

    // The facts are the inner handshake's: TLS 1.2 when the client wants no more.
    assert.deepEqual(await tlsFacts(`${url}/tls-facts`, ["--http1.1", "--tls-max", "1.2"]), {
      intercepted: true,
      sni: "origin.oxy.test",
      alpn: "http/1.1",
      version: "TLSv1.2",
    });
    assert.ok(!origin.started.some((s) => s.endsWith(" /tls-facts")), "the hook answered /tls-facts itself");

    // Plain HTTP in a decapsulated tunnel: no TLS facts.
    const plainFacts = await curl([...proxy, "-p", `http://plain.oxy.test:${plain.port}/tls-facts`]);
    assert.equal(plainFacts.status, 200, plainFacts.stderr);
    assert.deepEqual(JSON.parse(plainFacts.body), { intercepted: false, sni: null, alpn: null, version: null });

    // One ClientHello per curl run above.
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "intercepted" }, start + 6);
  });

  test("a path the request hook blocks gets its 403 inside TLS and never reaches the origin", async () => {
    const url = `https://origin.oxy.test:${origin.port}`;
    for (const version of ["--http2", "--http1.1"]) {
      const r = await curl([...proxy, ...trustInterception, version, `${url}/blocked/x`]);
      assert.equal(r.status, 403, r.stderr + r.body);
      assert.match(r.body, /blocked by the fixture: \/blocked\/x/);
    }
    const fine = await curl([...proxy, ...trustInterception, `${url}/not-blocked`]);
    assert.equal(fine.status, 200, fine.stderr);
    assert.ok(origin.seen.some((s) => s.path === "/not-blocked"));
    assert.ok(!origin.started.some((s) => s.includes("/blocked")), JSON.stringify(origin.started));
  });

  test("the client is shown a leaf minted for the server name and signed by the interception CA", async () => {
    const url = `https://origin.oxy.test:${origin.port}`;
    // Trusting only the origin's own CA, curl refuses what it is shown.
    const failedBefore = await sample(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "handshake_failed" });
    const started = origin.started.length;
    const refused = await curl([...proxy, "--cacert", pki.ca, `${url}/refused`]);
    assert.equal(refused.code, 60, `curl exit ${refused.code} (60: certificate problem): ${refused.stderr}`);
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "handshake_failed" }, failedBefore + 1);
    assert.equal(origin.started.length, started, "nothing reached the origin");

    // A TLS client through a CONNECT tunnel reads the leaf.
    const caCert = new X509Certificate(readFileSync(ca.cert));
    const look = async (alpn: string[]) => {
      const socket = await tlsHandshake({
        socket: await openTunnel(oxy.port("proxy"), `origin.oxy.test:${origin.port}`),
        servername: "origin.oxy.test",
        ca: readFileSync(ca.cert),
        ALPNProtocols: alpn,
      });
      const facts = { authorized: socket.authorized, alpn: socket.alpnProtocol, leaf: peerLeaf(socket) };
      socket.destroy();
      return facts;
    };
    const now = Date.now();
    const first = await look(["h2", "http/1.1"]);
    assert.equal(first.authorized, true);
    assert.equal(first.alpn, "h2");
    const leaf = first.leaf;
    assert.equal(leaf.subjectAltName, "DNS:origin.oxy.test");
    assert.match(leaf.subject, /^CN=origin\.oxy\.test$/m);
    assert.equal(leaf.issuer, caCert.subject);
    assert.equal(leaf.issuer, `CN=${ca.commonName}`);
    assert.ok(leaf.checkIssued(caCert), "issued by the interception CA");
    assert.ok(leaf.verify(caCert.publicKey), "signed with the interception CA's key");
    assert.equal(leaf.ca, false, "not a CA");
    assert.deepEqual(leaf.keyUsage, ["1.3.6.1.5.5.7.3.1"], "extended key usage serverAuth");
    // notBefore an hour back; `leaf_lifetime: 6h` from now.
    const notBefore = when(leaf.validFrom);
    assert.ok(notBefore <= now - 55 * MINUTE && notBefore >= now - HOUR - 5 * MINUTE, `notBefore ${leaf.validFrom}`);
    const notAfter = when(leaf.validTo);
    assert.ok(Math.abs(notAfter - (now + 6 * HOUR)) <= 5 * MINUTE, `notAfter ${leaf.validTo}`);

    // A second connection for the name is shown the cached leaf: no new signature.
    const minted = await sample(oxy, "oxy_tls_interception_leaves_minted_total", { endpoint: "proxy" });
    assert.ok(minted >= 1);
    const second = await look(["http/1.1"]);
    assert.equal(second.alpn, "http/1.1");
    assert.equal(second.leaf.fingerprint256, leaf.fingerprint256, "the same leaf");
    assert.equal(await sample(oxy, "oxy_tls_interception_leaves_minted_total", { endpoint: "proxy" }), minted);
    assert.ok((await sample(oxy, "oxy_tls_interception_leaves_cached", { endpoint: "proxy" })) >= 1);

    // No SNI (a client asking for an address): the leaf is minted for the target's IP.
    const byAddress = await curl([...proxy, ...trustInterception, `https://127.0.0.1:${origin.port}/by-address`]);
    assert.equal(byAddress.status, 200, byAddress.stderr);
    assert.equal(origin.seen.find((s) => s.path === "/by-address")?.headers["x-fixture-request"], "seen");
    assert.deepEqual(await tlsFacts(`https://127.0.0.1:${origin.port}/tls-facts`, ["--http2"]), { intercepted: true, sni: null, alpn: "h2", version: "TLSv1.3" });
  });

  test("a target whose certificate does not verify gets nothing: the client gets 502 with the reason, counted", async () => {
    const failures = (reason: string) => sample(oxy, "oxy_tls_upstream_verification_failures_total", { endpoint: "proxy", reason });

    // Signed by a CA that `http.client.ca_file` does not hold.
    const unknownBefore = await failures("unknown_issuer");
    const r = await curl([...proxy, ...trustInterception, `https://untrusted.oxy.test:${untrusted.port}/secret`]);
    assert.equal(r.status, 502, r.stderr + r.body);
    assert.match(r.body, /certificate verification failed/);
    await sampleReaches(oxy, "oxy_tls_upstream_verification_failures_total", { endpoint: "proxy", reason: "unknown_issuer" }, unknownBefore + 1);
    assert.deepEqual(untrusted.started, [], "the untrusted origin received no request");
    assert.equal(untrusted.seen.length, 0);

    // A trusted certificate for other names.
    const mismatchBefore = await failures("hostname_mismatch");
    const wrongName = await curl([...proxy, ...trustInterception, `https://mismatch.oxy.test:${origin.port}/wrong-name`]);
    assert.equal(wrongName.status, 502, wrongName.stderr + wrongName.body);
    assert.match(wrongName.body, /certificate verification failed/);
    await sampleReaches(oxy, "oxy_tls_upstream_verification_failures_total", { endpoint: "proxy", reason: "hostname_mismatch" }, mismatchBefore + 1);
    assert.ok(!origin.started.some((s) => s.includes("/wrong-name")), "the origin received no request for the wrong name");
  });

  test("a ClientHello the app declines (pinned.oxy.test) is pumped untouched: the origin's own certificate, no hook", async () => {
    const passedBefore = await sample(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "passed" });
    const url = `https://pinned.oxy.test:${origin.port}/tls-facts`;
    const r = await curl([...proxy, "--cacert", pki.ca, url]);
    assert.equal(r.status, 200, r.stderr + r.body);
    const answer = JSON.parse(r.body);
    assert.deepEqual([answer.origin, answer.path], ["origin", "/tls-facts"], "the origin answered");
    const seen = origin.seen.filter((s) => s.path === "/tls-facts");
    assert.equal(seen.length, 1, "the origin answered /tls-facts, not the hook");
    assert.equal(seen[0].authority, `pinned.oxy.test:${origin.port}`);
    assert.equal(seen[0].headers["x-fixture-request"], undefined, "the request hook never saw it");
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "passed" }, passedBefore + 1);
    // Trusting only the interception CA fails: no minted leaf is shown.
    const minted = await curl([...proxy, ...trustInterception, url]);
    assert.equal(minted.code, 60, `curl exit ${minted.code}: ${minted.stderr}`);
    const [record] = await auditWhere(audit, (a) => a.target === `pinned.oxy.test:${origin.port}`);
    assert.equal(record.inspection, "passed");
  });

  test("by default, TLS offering only a protocol that is not HTTP (ALPN imap) is tunnelled, not intercepted", async () => {
    // An IMAPS-like origin: the origins' own certificate, ALPN imap, a greeting.
    const imaps = createTlsServer({ cert: readFileSync(pki.server.chain), key: readFileSync(pki.server.key), ALPNProtocols: ["imap"] }, (socket) => {
      socket.on("error", () => {});
      socket.end("* OK IMAP4rev1 ready\r\n");
    });
    await new Promise<void>((ok) => imaps.listen(0, "127.0.0.1", ok));
    const port = (imaps.address() as AddressInfo).port;
    try {
      const passedBefore = await sample(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "passed" });
      const interceptedBefore = await intercepted("proxy");
      // Trusting only the origin's CA: the origin's own leaf, verified, ALPN imap.
      const socket = await tlsHandshake({
        socket: await openTunnel(oxy.port("proxy"), `origin.oxy.test:${port}`),
        servername: "origin.oxy.test",
        ca: readFileSync(pki.ca),
        ALPNProtocols: ["imap"],
      });
      const greeting = new Promise<string>((ok, fail) => {
        let text = "";
        socket.setEncoding("utf8");
        socket.on("data", (chunk: string) => (text += chunk));
        socket.on("end", () => ok(text));
        socket.on("error", fail);
      });
      const originCa = new X509Certificate(readFileSync(pki.ca));
      const interceptionCa = new X509Certificate(readFileSync(ca.cert));
      const leaf = peerLeaf(socket);
      assert.equal(socket.authorized, true, String(socket.authorizationError));
      assert.equal(socket.alpnProtocol, "imap");
      assert.equal(leaf.issuer, originCa.subject, "the origin's own leaf");
      assert.notEqual(leaf.issuer, interceptionCa.subject, "no minted leaf");
      assert.equal(await greeting, "* OK IMAP4rev1 ready\r\n");
      socket.destroy();
      await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "proxy", outcome: "passed" }, passedBefore + 1);
      assert.equal(await intercepted("proxy"), interceptedBefore, "nothing intercepted");
    } finally {
      await new Promise<void>((ok) => imaps.close(() => ok()));
    }
  });

  test("a protocol: tcp endpoint intercepts TLS to its target", async () => {
    const port = oxy.port("l4");
    const start = await intercepted("l4");
    const connectTo = ["--connect-to", `origin.oxy.test:443:127.0.0.1:${port}`, ...trustInterception];
    const r = await curl([...connectTo, "https://origin.oxy.test/hello-l4"]);
    assert.equal(r.status, 200, r.stderr + oxy.logs().slice(-3000));
    assert.equal(JSON.parse(r.body).path, "/hello-l4");
    const seen = origin.seen.find((s) => s.path === "/hello-l4");
    assert.equal(seen?.headers["x-fixture-request"], "seen", "the request went through the request hook");
    const facts = await curl([...connectTo, "--http2", "https://origin.oxy.test/tls-facts"]);
    assert.equal(facts.status, 200, facts.stderr);
    assert.deepEqual(JSON.parse(facts.body), { intercepted: true, sni: "origin.oxy.test", alpn: "h2", version: "TLSv1.3" });
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "l4", outcome: "intercepted" }, start + 2);

    // `leaf_lifetime: 720h` is longer than the CA lives: the leaf ends with the CA.
    const socket = await tlsHandshake({ host: "127.0.0.1", port, servername: "origin.oxy.test", ca: readFileSync(ca.cert), ALPNProtocols: ["http/1.1"] });
    const leaf = peerLeaf(socket);
    socket.destroy();
    assert.equal(when(leaf.validTo), when(new X509Certificate(readFileSync(ca.cert)).validTo));
  });

  test("bytes that are neither HTTP nor TLS go through a decapsulated CONNECT tunnel untouched", async () => {
    const payload = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + (i >> 8)) % 256)); // starts with 0x00
    const socket = await openTunnel(oxy.port("proxy"), `127.0.0.1:${echo.port}`);
    const chunks: Buffer[] = [];
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.write(payload);
    const back = await until(
      () => {
        const got = Buffer.concat(chunks);
        return got.length >= payload.length ? got : undefined;
      },
      () => `${payload.length} bytes echoed (${Buffer.concat(chunks).length} so far)`,
    );
    assert.ok(back.equals(payload), "the bytes came back unchanged");
    socket.end();
    const [record] = await auditWhere(audit, (a) => a.target === `127.0.0.1:${echo.port}`);
    assert.equal(record.inspection, "passed");
    assert.equal(record.bytes_up, payload.length);
    assert.equal(record.bytes_down, payload.length);
  });

  test("audit records say how each tunnel was looked into; the requests inside carry its tunnel id", async () => {
    // Two requests in one intercepted tunnel (curl reuses the connection).
    const url = `https://audited.oxy.test:${origin.port}`;
    const r = await curl([...proxy, ...trustInterception, `${url}/audited/1`, `${url}/audited/2`]);
    assert.equal(r.status, 200, r.stderr);
    assert.deepEqual(origin.seen.filter((s) => s.path.startsWith("/audited/")).map((s) => s.path), ["/audited/1", "/audited/2"]);
    // Plain HTTP in a decapsulated tunnel.
    const p = await curl([...proxy, "-p", `http://plain.oxy.test:${plain.port}/audited/plain`]);
    assert.equal(p.status, 200, p.stderr);

    // One audit record for the intercepted tunnel, and both its requests' access log
    // lines carry its id.
    const [tls] = await auditWhere(audit, (a) => a.target === `audited.oxy.test:${origin.port}`);
    assert.equal(tls.inspection, "intercepted", JSON.stringify(tls));
    // The client's TLS bytes each way: a ClientHello and two requests up, a certificate
    // chain and two responses down.
    assert.ok(tls.bytes_up > 300 && tls.bytes_down > 1000, JSON.stringify(tls));
    assert.equal(typeof tls.tunnel_id, "string", JSON.stringify(tls));
    assert.ok(tls.tunnel_id.length > 0);
    for (const path of ["/audited/1", "/audited/2"]) {
      const line = await accessLine(oxy, path);
      assert.equal(line.status, 200, JSON.stringify(line));
      assert.equal(tunnelIdOf(line), tls.tunnel_id, JSON.stringify(line));
    }

    // The plain tunnel (plain.oxy.test had tunnels before: find this one by its id).
    const plainLine = await accessLine(oxy, "/audited/plain");
    const plainId = tunnelIdOf(plainLine);
    assert.equal(typeof plainId, "string", JSON.stringify(plainLine));
    assert.notEqual(plainId, tls.tunnel_id);
    const [http] = await auditWhere(audit, (a) => a.tunnel_id === plainId);
    assert.equal(http.target, `plain.oxy.test:${plain.port}`);
    assert.equal(http.inspection, "http");

    // Tunnel ids are unique.
    const ids = readAudit(audit).map((a) => a.tunnel_id);
    assert.equal(new Set(ids).size, ids.length, JSON.stringify(ids));
  });

  test("load: 1,000 intercepted requests over 50 names mint one leaf per name", { timeout: 240_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "oxy-interception-load-"));
    const config = join(dir, "urls.curlrc");
    const urls = Array.from({ length: 1000 }, (_, i) => `https://${loadNames[i % loadNames.length]}:${origin.port}/load/${i}`);
    writeFileSync(config, urls.map((u) => `url = "${u}"\noutput = "/dev/null"\n`).join(""));
    const args = ["-sS", "-Z", "--parallel-max", "20", "-x", oxy.url("load"), ...trustInterception, "-m", "60", "-w", "%{http_code} %{url_effective}\n", "-K", config];
    const { stdout, stderr, code } = await run("curl", args, { timeout: 200_000, maxBuffer: 16 << 20 }).then(
      ({ stdout, stderr }) => ({ stdout, stderr, code: 0 }),
      (e: any) => ({ stdout: String(e.stdout ?? ""), stderr: String(e.stderr ?? e.message), code: typeof e.code === "number" ? e.code : -1 }),
    );
    const lines = stdout.trim().split("\n").filter(Boolean);
    const failed = lines.filter((l) => !l.startsWith("200 "));
    assert.equal(code, 0, `curl exit ${code}: ${stderr.slice(0, 2000)}`);
    assert.equal(lines.length, 1000, stdout.slice(0, 2000));
    assert.deepEqual(failed, [], "every response is 200");
    assert.equal(origin.seen.filter((s) => s.path.startsWith("/load/")).length, 1000);

    assert.equal(await sample(oxy, "oxy_tls_interception_leaves_minted_total", { endpoint: "load" }), 50);
    assert.equal(await sample(oxy, "oxy_tls_interception_leaves_cached", { endpoint: "load" }), 50);
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "load", outcome: "intercepted" }, 50);
    assert.equal(await sample(oxy, "oxy_tls_interceptions_total", { endpoint: "load", outcome: "handshake_failed" }), 0);
    assert.equal(await sample(oxy, "oxy_tls_upstream_verification_failures_total", { endpoint: "load" }), 0);
  });

  test("stops cleanly", async () => {
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs().slice(-3000));
  });
});

describe("QUIC interception", () => {
  let pki: TestPki;
  let ca: InterceptionCa;
  /** The HTTPS origin (TCP) every intercepted flow's requests go to. */
  let origin: HttpsOrigin;
  let echo: UdpEcho;
  let dns: DnsServer;
  let audit: string;
  let oxy: OxyProcess;
  const originTarget = () => `origin.oxy.test:${origin.port}`;

  before(async () => {
    pki = makePki(["origin.oxy.test", "pinned.oxy.test"]);
    ca = makeInterceptionCa();
    [origin, echo] = await Promise.all([startHttpsOrigin(pki.server, "quic origin"), startUdpEcho()]);
    dns = await startDnsServer(Object.fromEntries(["origin.oxy.test", "pinned.oxy.test", "echo.oxy.test"].map((n) => [n, ["127.0.0.1"]])));
    audit = auditPath();
    const tls_interception = { ca_chain: ca.cert, ca_key: ca.key };
    const client = { ca_file: pki.ca };
    const connect_udp = { enabled: true };
    oxy = await OxyProcess.start({
      binary: "fixture-app",
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        dns: { groups: [{ name: "test", servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
        telemetry: { audit: { path: audit }, log: { format: "json", level: "info" } },
        endpoints: [
          {
            name: "quic",
            protocol: "udp",
            listen: ["127.0.0.1:0"],
            udp: { target: originTarget() },
            http: { client },
            tls_interception,
            app: fixtureApp,
          },
          // Datagrams that are not QUIC, to a UDP echo. Idle long enough that the three
          // datagrams of its test are one flow (one audit record) on a loaded machine.
          {
            name: "datagrams",
            protocol: "udp",
            listen: ["127.0.0.1:0"],
            udp: { target: `echo.oxy.test:${echo.port}`, idle_timeout: "2s" },
            http: { client },
            tls_interception,
            app: fixtureApp,
          },
          // QUIC for pinned.oxy.test, which the app declines to intercept, to a UDP echo
          // (which never completes a handshake).
          {
            name: "pinned",
            protocol: "udp",
            listen: ["127.0.0.1:0"],
            udp: { target: `pinned.oxy.test:${echo.port}`, idle_timeout: "300ms" },
            http: { client },
            tls_interception,
            app: fixtureApp,
          },
          // QUIC on an endpoint without `tls_interception`, to a UDP echo.
          {
            name: "no-ca",
            protocol: "udp",
            listen: ["127.0.0.1:0"],
            udp: { target: `echo.oxy.test:${echo.port}`, idle_timeout: "300ms" },
            http: { client },
            app: fixtureApp,
          },
          // CONNECT-UDP over HTTP/2 without TLS (h2c).
          { name: "masque", listen: ["127.0.0.1:0"], http: { connect_udp, client }, tls_interception, app: fixtureApp },
          // CONNECT-UDP over HTTP/3.
          {
            name: "masque-h3",
            listen: ["127.0.0.1:0"],
            tls: { enabled: true, certificates: [pki.server] },
            http: { connect_udp, client, h3: { enabled: true } },
            tls_interception,
            app: fixtureApp,
          },
        ],
      },
    });
  });

  after(async () => {
    const stopped = await oxy?.stop();
    await Promise.all([origin?.close(), echo?.close(), dns?.close()]);
    assert.deepEqual(stopped, { code: 0, signal: null }, oxy?.logs().slice(-3000));
  });

  const outcome = (endpoint: string, outcome: string) => sample(oxy, "oxy_tls_interceptions_total", { endpoint, outcome });
  const minted = (endpoint: string) => sample(oxy, "oxy_tls_interception_leaves_minted_total", { endpoint });

  /** The response to `path` among `responses`. */
  function response(responses: H3Response[], path: string, log: string): H3Response {
    const r = responses.find((x) => x.path === path);
    assert.ok(r, `no response to ${path}: ${JSON.stringify(responses)}\n${log}\n${oxy.logs().slice(-3000)}`);
    return r;
  }

  /** Checks the answers to GET `hello`, `/tls-facts` and `blocked` over an intercepted
   * flow: the origin's answer through the hooks (over TCP TLS), the inner TLS facts, and
   * the hook's 403. */
  function checkIntercepted(responses: H3Response[], log: string, hello: string, blocked: string) {
    const ok = response(responses, hello, log);
    assert.equal(ok.status, 200, ok.body);
    const answer = JSON.parse(ok.body);
    assert.deepEqual([answer.origin, answer.method, answer.path], ["quic origin", "GET", hello]);
    assert.equal(ok.headers["x-origin"], "quic origin");
    assert.equal(ok.headers["x-fixture-response"], "seen", "the response went through the response hook");
    const seen = origin.seen.find((s) => s.path === hello);
    assert.ok(seen, JSON.stringify(origin.started));
    assert.equal(seen.method, "GET");
    assert.equal(seen.headers["x-fixture-request"], "seen", "the request went through the request hook");
    assert.ok(["h2", "http/1.1"].includes(seen.alpnProtocol), `the origin was reached over TCP TLS (ALPN ${seen.alpnProtocol})`);
    assert.match(seen.authority, /^origin\.oxy\.test(:\d+)?$/);

    const facts = response(responses, "/tls-facts", log);
    assert.equal(facts.status, 200, facts.body);
    assert.deepEqual(JSON.parse(facts.body), { intercepted: true, sni: "origin.oxy.test", alpn: "h3", version: "TLSv1.3" });

    const no = response(responses, blocked, log);
    assert.equal(no.status, 403, no.body);
    assert.match(no.body, new RegExp(`blocked by the fixture: ${blocked.replaceAll("/", "\\/")}`));
    assert.ok(!origin.started.some((s) => s.endsWith(" /tls-facts") || s.includes("/blocked")), JSON.stringify(origin.started));
  }

  /** The audit record of the flow of `endpoint` whose access log line for `path` names
   * it: its inspection must be `intercepted`. */
  async function checkAudited(endpoint: string, path: string) {
    const line = await accessLine(oxy, path);
    assert.equal(line.status, 200, JSON.stringify(line));
    const id = tunnelIdOf(line);
    assert.equal(typeof id, "string", JSON.stringify(line));
    const [record] = await auditWhere(audit, (a) => a.tunnel_id === id, 1, 15_000);
    assert.equal(record.endpoint, endpoint, JSON.stringify(record));
    assert.equal(record.protocol, "udp", JSON.stringify(record));
    assert.equal(record.target, originTarget(), JSON.stringify(record));
    assert.equal(record.inspection, "intercepted", JSON.stringify(record));
    // The client's QUIC datagrams each way (the Initial alone is 1200 bytes).
    assert.ok(record.packets_up > 1 && record.packets_down > 1 && record.bytes_up >= 1200, JSON.stringify(record));
  }

  test("a protocol: udp endpoint intercepts QUIC: HTTP/3 through the hooks, to the target over TCP TLS", async () => {
    const start = await outcome("quic", "intercepted");
    const paths = ["/quic/hello?x=1", "/tls-facts", "/blocked/x", "/quic/again"];
    const r = await h3Get({ connect: `127.0.0.1:${oxy.port("quic", "udp")}`, serverName: "origin.oxy.test", ca: ca.cert, paths });
    assert.equal(r.error, undefined, r.log + oxy.logs().slice(-3000));
    assert.deepEqual(r.responses.map((x) => x.path), paths);
    checkIntercepted(r.responses, r.log, "/quic/hello?x=1", "/blocked/x");
    assert.equal(response(r.responses, "/quic/again", r.log).status, 200);

    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "quic", outcome: "intercepted" }, start + 1);
    assert.ok((await minted("quic")) >= 1);
    await oxy.waitForLog(/fixture saw inside a tunnel.*Quic/);

    // One flow: both requests' access log lines carry its tunnel id, and its audit
    // record says it was intercepted.
    await checkAudited("quic", "/quic/hello?x=1");
    const [hello, again] = await Promise.all([accessLine(oxy, "/quic/hello?x=1"), accessLine(oxy, "/quic/again")]);
    assert.equal(tunnelIdOf(again), tunnelIdOf(hello));
  });

  test("trusting only the origin's CA, the QUIC client refuses the minted certificate", async () => {
    const started = origin.started.length;
    const failed = await outcome("quic", "handshake_failed");
    const r = await h3Get({ connect: `127.0.0.1:${oxy.port("quic", "udp")}`, serverName: "origin.oxy.test", ca: pki.ca, paths: ["/quic/refused"], timeout: 5 });
    assert.match(r.error ?? "", /certificate verification failed/, r.log);
    assert.deepEqual(r.responses, []);
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint: "quic", outcome: "handshake_failed" }, failed + 1);
    assert.equal(origin.started.length, started, "nothing reached the origin");
  });

  const carriers = [
    { name: "HTTP/2", over: "h2", endpoint: "masque", proxy: () => ({ proxy: `http://127.0.0.1:${oxy.port("masque")}` }) },
    { name: "HTTP/3", over: "h3", endpoint: "masque-h3", proxy: () => ({ proxy: `https://127.0.0.1:${oxy.port("masque-h3", "tcp")}`, ca: pki.ca }) },
  ] as const;
  for (const { name, over, endpoint, proxy } of carriers) {
    test(`CONNECT-UDP over ${name} carrying QUIC is intercepted`, async () => {
      const start = await outcome(endpoint, "intercepted");
      const relay = await startUdpRelay({ ...proxy(), over, target: originTarget() });
      try {
        const paths = ["/tls-facts", `/blocked/${over}`, `/quic/masque-${over}`];
        const r = await h3Get({ connect: `127.0.0.1:${relay.port}`, serverName: "origin.oxy.test", ca: ca.cert, paths });
        assert.equal(r.error, undefined, r.log + relay.output() + oxy.logs().slice(-3000));
        checkIntercepted(r.responses, r.log, `/quic/masque-${over}`, `/blocked/${over}`);
      } finally {
        await relay.close();
      }
      await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint, outcome: "intercepted" }, start + 1);
      await checkAudited(endpoint, `/quic/masque-${over}`);
    });
  }

  test("datagrams that are not QUIC go through a decapsulating udp endpoint unchanged", async () => {
    const payloads = [
      Buffer.from(Array.from({ length: 1200 }, (_, i) => (i * 7 + (i >> 8)) % 256)), // starts with 0x00
      Buffer.from("not quic at all"),
      Buffer.from([0xff, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03]),
    ];
    const socket = createSocket("udp4");
    const replies: Buffer[] = [];
    socket.on("message", (msg) => replies.push(msg));
    await new Promise<void>((ok) => socket.bind(0, "127.0.0.1", ok));
    const local = `127.0.0.1:${socket.address().port}`;
    try {
      const port = oxy.port("datagrams", "udp");
      for (const p of payloads) await new Promise<void>((ok, fail) => socket.send(p, port, "127.0.0.1", (e) => (e ? fail(e) : ok())));
      await until(() => (replies.length >= payloads.length ? true : undefined), () => `${payloads.length} echoes (${replies.length} so far)`);
    } finally {
      await new Promise<void>((ok) => socket.close(() => ok()));
    }
    assert.equal(replies.length, payloads.length);
    replies.forEach((r, i) => assert.ok(r.equals(payloads[i]), `datagram ${i} came back unchanged`));

    const [record] = await auditWhere(audit, (a) => a.endpoint === "datagrams" && a.client === local, 1, 10_000);
    assert.equal(record.inspection, "passed", JSON.stringify(record));
    assert.deepEqual([record.packets_up, record.packets_down], [3, 3], JSON.stringify(record));
    assert.equal(record.bytes_up, payloads.reduce((n, p) => n + p.length, 0));
    assert.equal(await outcome("datagrams", "intercepted"), 0);
    assert.equal(await minted("datagrams"), 0);
  });

  /** An HTTP/3 client's QUIC for `serverName` to the udp endpoint `endpoint`, whose target
   * is the UDP echo, is pumped as UDP: its Initials reach the echo as they were (and come
   * back, so no handshake completes), counted and audited as `passed`, no leaf minted. */
  async function checkPumped(endpoint: string, serverName: string) {
    const passed = await outcome(endpoint, "passed");
    const echoed = echo.received.length;
    const r = await h3Get({ connect: `127.0.0.1:${oxy.port(endpoint, "udp")}`, serverName, ca: ca.cert, paths: ["/pumped"], timeout: 1 });
    assert.match(r.error ?? "", /timed out .* the QUIC handshake/, `${JSON.stringify(r)}\n${oxy.logs().slice(-3000)}`);
    await sampleReaches(oxy, "oxy_tls_interceptions_total", { endpoint, outcome: "passed" }, passed + 1);
    assert.equal(await outcome(endpoint, "intercepted"), 0);
    assert.equal(await minted(endpoint), 0, "no leaf was minted");
    // QUIC Initials: long header packets of 1200 bytes or more.
    const initials = echo.received.slice(echoed).filter((d) => (d[0] & 0xc0) === 0xc0 && d.length >= 1200);
    assert.ok(initials.length >= 1, `${echo.received.length - echoed} datagrams reached the echo`);
    const [record] = await auditWhere(audit, (a) => a.endpoint === endpoint, 1, 10_000);
    assert.equal(record.inspection, "passed", JSON.stringify(record));
    assert.equal(record.resolved, `127.0.0.1:${echo.port}`, JSON.stringify(record));
    assert.ok(record.packets_up >= 1 && record.packets_down >= 1, JSON.stringify(record));
    assert.ok(!readAudit(audit).some((a) => a.endpoint === endpoint && a.inspection !== "passed"), JSON.stringify(readAudit(audit)));
  }

  test("QUIC the app declines to intercept (pinned.oxy.test) is pumped as UDP to the target", async () => {
    await checkPumped("pinned", "pinned.oxy.test");
  });

  test("QUIC on a decapsulating udp endpoint without tls_interception is pumped as UDP", async () => {
    await checkPumped("no-ca", "origin.oxy.test");
  });
});

describe("TLS interception settings", () => {
  let pki: TestPki;
  let ca: InterceptionCa;

  before(() => {
    pki = makePki();
    ca = makeInterceptionCa();
  });

  /** One forward-proxy endpoint with `tls_interception` set to `interception`. */
  function settings(interception: Record<string, any>, addressFile?: string) {
    return {
      telemetry: { listen: "127.0.0.1:0", ...(addressFile ? { address_file: addressFile } : {}) },
      endpoints: [
        { name: "plain", listen: ["127.0.0.1:0"] },
        { name: "proxy", listen: ["127.0.0.1:0"], http: { connect: true }, tls_interception: interception, app: { tunnel_decapsulate: true } },
      ],
    };
  }

  async function check(interception: Record<string, any>) {
    return runToExit("fixture-app", ["--check-config", "--config", writeConfig(settings(interception))]);
  }

  test("a good CA passes --check-config", async () => {
    const r = await check({ ca_chain: ca.cert, ca_key: ca.key, leaf_lifetime: "12h", cache_size: 10 });
    assert.equal(r.code, 0, r.stderr);
  });

  test("a missing CA file is a settings error naming tls_interception.ca_chain", async () => {
    const r = await check({ ca_chain: "/nonexistent/oxy-interception-ca.pem", ca_key: ca.key });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /endpoints\[1\]\.tls_interception\.ca_chain/);
    assert.doesNotMatch(r.stderr, /panicked/);
  });

  test("a certificate that is not a CA is a settings error naming tls_interception.ca_chain", async () => {
    // The origin's own leaf: no basicConstraints CA:TRUE.
    const r = await check({ ca_chain: pki.server.chain, ca_key: pki.server.key });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /endpoints\[1\]\.tls_interception\.ca_chain/);
  });

  test("a key that does not match the CA is a settings error naming tls_interception", async () => {
    // Named like a mismatch in `tls.certificates` (on the chain), or on the key.
    const r = await check({ ca_chain: ca.cert, ca_key: pki.server.key });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /endpoints\[1\]\.tls_interception\.ca_(chain|key): .*does not match/);
  });

  test("at start, a bad CA stops the process before anything is bound", async () => {
    const addressFile = join(mkdtempSync(join(tmpdir(), "oxy-test-")), "telemetry-address");
    const path = writeConfig(settings({ ca_chain: pki.server.chain, ca_key: pki.server.key }, addressFile));
    const r = await runToExit("fixture-app", ["--config", path]);
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /endpoints\[1\]\.tls_interception\.ca_chain/);
    assert.equal(existsSync(addressFile), false, "the telemetry listener was never bound");
  });
});
