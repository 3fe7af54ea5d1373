// Raw public keys (RFC 7250): an endpoint presenting a key without a certificate
// (`tls.raw_public_key`) and accepting clients by the SHA-256 pin of their key's
// SubjectPublicKeyInfo (`tls.client_pins`), beside X.509 clients (`client_ca`) on one
// endpoint; the upstream client asking upstreams for a raw public key by pin
// (`http.client.server_pins`, or per request by the egress hook: the fixture's
// `upstream_server_pin`) and presenting its own (`http.client.raw_public_key`); and bad
// pins in settings; the same over HTTP/3 (rustls) with `oxy-client`. Two Oxy processes talk to each other: a front (`oxy` or
// `fixture-app`, a reverse proxy) and an internal service (`fixture-app`, whose
// `respond_path` answers with the TLS facts its hooks saw). Keys are EC P-256, made with
// openssl.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, createPublicKey } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, test } from "node:test";
import { makePki, type TestPki } from "../lib/certs.ts";
import { curl, lastResponse, type CurlResult } from "../lib/curl.ts";
import { endpointSettingsErrors, OxyProcess, runToExit, writeConfig } from "../lib/oxy.ts";
import { runClient } from "../lib/oxy-client.ts";

/** A PEM private key and the pin of its public key (lowercase hex). */
interface RawKey {
  key: string;
  pin: string;
}

let pki: TestPki;
/** A second PKI: its client certificate chains to a CA the endpoints do not trust. */
let strangerPki: TestPki;
/** The front's key (the internal service pins it). */
let front: RawKey;
/** The internal service's key (the front pins it). */
let internal: RawKey;
/** A key nobody pins. */
let stranger: RawKey;

/** The SHA-256 of the public key's SubjectPublicKeyInfo (DER), in hex. */
function pinOf(keyPath: string): string {
  const spki = createPublicKey(readFileSync(keyPath)).export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("hex");
}

function makeKey(dir: string, name: string): RawKey {
  const key = join(dir, `${name}.key`);
  execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], { stdio: ["ignore", "ignore", "pipe"] });
  return { key, pin: pinOf(key) };
}

before(() => {
  pki = makePki();
  strangerPki = makePki([], [], "Oxy Stranger CA");
  const dir = mkdtempSync(join(tmpdir(), "oxy-rpk-"));
  front = makeKey(dir, "front");
  internal = makeKey(dir, "internal");
  stranger = makeKey(dir, "stranger");
  // The pin as the documentation computes it: `openssl pkey -pubout -outform DER | sha256`.
  const der = execFileSync("openssl", ["pkey", "-in", internal.key, "-pubout", "-outform", "DER"]);
  assert.equal(createHash("sha256").update(der).digest("hex"), internal.pin);
});

/** Stops `oxy` and checks that it exited cleanly. */
async function stopClean(oxy: OxyProcess) {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
}

/** The internal service: `fixture-app`, one endpoint `internal` answering `/hello` with
 * the TLS facts, with `tls` settings (a raw public key only, front's pin required, unless
 * `tls` says otherwise). */
function startInternal(tls: Record<string, any> = {}): Promise<OxyProcess> {
  return OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        {
          name: "internal",
          listen: ["127.0.0.1:0"],
          tls: { enabled: true, raw_public_key: internal.key, client_auth: "required", client_pins: [front.pin], ...tls },
          app: { respond_path: "/hello" },
        },
      ],
    },
  });
}

/** A front `oxy` reverse proxy `front` to the internal service at `upstreamPort`, with
 * `http.client` settings `client`. */
function startFront(upstreamPort: number, client: Record<string, any>): Promise<OxyProcess> {
  return OxyProcess.start({
    binary: "oxy",
    settings: {
      egress: { allow: ["127.0.0.1/32"] },
      endpoints: [
        {
          name: "front",
          listen: ["127.0.0.1:0"],
          http: { upstream: `https://127.0.0.1:${upstreamPort}`, client },
        },
      ],
    },
  });
}

/** `GET /hello` through a front endpoint (plain HTTP) with curl, response headers too.
 *
 * The Host header names the upstream (`127.0.0.1:upstreamPort`), not the front: when the
 * front reverse-proxies over HTTP/2 it keeps the client's Host header while `:authority`
 * is the upstream's, and an Oxy upstream answers a mismatch with 400 `the Host header does
 * not match the request's :authority` (a quirk outside raw public keys). */
async function throughFront(oxy: OxyProcess, endpoint: string, upstreamPort: number): Promise<CurlResult> {
  return curl(["-D", "-", "-H", `Host: 127.0.0.1:${upstreamPort}`, `${oxy.url(endpoint)}/hello`]);
}

/** `GET https://localhost:PORT/hello` straight to an endpoint with curl (trusting the
 * test CA), with `more` curl options. */
function direct(port: number, more: string[] = []): Promise<CurlResult> {
  return curl(["-D", "-", "--cacert", pki.ca, ...more, `https://localhost:${port}/hello`]);
}

/** Asserts a 200 from the internal service's `/hello`; its response headers. */
function hello(r: CurlResult, what: string): Record<string, string> {
  assert.equal(r.status, 200, `${what}: ${r.stderr}${r.body}`);
  const { headers, body } = lastResponse(r.body);
  assert.equal(body.trimEnd(), "hello from the fixture app", what);
  return headers;
}

/** The /metrics lines of `process` that count HTTP requests on `endpoint`. */
async function requestLines(process: OxyProcess, endpoint: string): Promise<string[]> {
  const { body } = await process.telemetry("/metrics");
  return body.split("\n").filter((line) => line.startsWith(`oxy_http_requests_total{endpoint="${endpoint}"`));
}

// ---------------------------------------------------------------------------------------
// 1-3. Two Oxy processes over raw public keys

test("two Oxy processes over raw public keys both ways: the internal service's hooks see the front's pin", async () => {
  const service = await startInternal();
  const port = service.port("internal");
  const oxy = await startFront(port, { server_pins: [internal.pin], raw_public_key: front.key });

  const headers = hello(await throughFront(oxy, "front", port), "through the front");
  assert.equal(headers["x-client-pin"], front.pin);
  assert.equal(headers["x-client-subject"] ?? "", "", "a raw public key has no subject");
  assert.equal(headers["x-client-sha256"] ?? "", "", "a raw public key has no certificate digest");
  assert.equal(headers["x-tls-version"], "TLSv1.3");
  // Again, on the pooled connection or a new one: still the front's key.
  assert.equal(hello(await throughFront(oxy, "front", port), "again")["x-client-pin"], front.pin);

  assert.equal(await oxy.metric('oxy_tls_upstream_verification_failures_total{endpoint="front",reason="pin_mismatch"}'), undefined);
  assert.match((await service.telemetry("/metrics")).body, /^oxy_tls_handshakes_total\{endpoint="internal",version="TLSv1\.3"\} [1-9]/m);
  assert.equal(await service.metric('oxy_tls_handshake_failures_total{endpoint="internal",reason="client_pin"}'), undefined);
  await stopClean(oxy);
  await stopClean(service);
});

test("a wrong server pin at the front: 502 naming the upstream's key, pin_mismatch counted, no request reaches the internal service", async () => {
  const service = await startInternal();
  const port = service.port("internal");
  const oxy = await startFront(port, { server_pins: [stranger.pin], raw_public_key: front.key });

  const r = await throughFront(oxy, "front", port);
  assert.equal(r.status, 502, r.stderr);
  assert.equal(
    lastResponse(r.body).body.trimEnd(),
    `certificate verification failed for 127.0.0.1:${port}: raw public key ${internal.pin} matches no pin`,
  );
  await oxy.waitForMetric('oxy_tls_upstream_verification_failures_total{endpoint="front",reason="pin_mismatch"}', 1);
  // The internal service saw the handshake end in the front's alert, and no request.
  await service.waitForMetric('oxy_tls_handshake_failures_total{endpoint="internal",reason="handshake"}', 1);
  assert.deepEqual(await requestLines(service, "internal"), []);
  await stopClean(oxy);
  await stopClean(service);
});

test("a front presenting a key the internal service does not pin: 502 at the front, client_pin counted there", async () => {
  const service = await startInternal();
  const port = service.port("internal");
  const oxy = await startFront(port, { server_pins: [internal.pin], raw_public_key: stranger.key });

  const r = await throughFront(oxy, "front", port);
  assert.equal(r.status, 502, `${r.stderr}${r.body}`);
  await service.waitForMetric('oxy_tls_handshake_failures_total{endpoint="internal",reason="client_pin"}', 1);
  await service.waitForLog(new RegExp(`client raw public key ${stranger.pin} matches no pin`));
  assert.deepEqual(await requestLines(service, "internal"), []);
  // The front found the upstream's key right: its refusal is not a pin mismatch.
  assert.equal(await oxy.metric('oxy_tls_upstream_verification_failures_total{endpoint="front",reason="pin_mismatch"}'), undefined);
  await stopClean(oxy);
  await stopClean(service);
});

// ---------------------------------------------------------------------------------------
// 4. X.509 and raw public key clients on one endpoint

test("one endpoint takes X.509 clients (client_ca) and raw public key clients (client_pins); client_auth optional", async () => {
  const service = await startInternal({ certificates: [pki.server], client_auth: "optional", client_ca: pki.ca });
  const port = service.port("internal");

  // curl asks for no raw public key: the endpoint's certificate is served and verified.
  const alice = hello(await direct(port, ["--cert", pki.client.chain, "--key", pki.client.key]), "alice's certificate");
  assert.match(alice["x-client-subject"] ?? "", /CN=alice/i);
  assert.match(alice["x-client-sha256"] ?? "", /^[0-9a-f]{64}$/);
  assert.equal(alice["x-client-pin"] ?? "", "", "a certificate client has no pin");

  const oxy = await startFront(port, { server_pins: [internal.pin], raw_public_key: front.key });
  const rpk = hello(await throughFront(oxy, "front", port), "the raw public key front");
  assert.equal(rpk["x-client-pin"], front.pin);
  assert.equal(rpk["x-client-subject"] ?? "", "");

  const anonymous = hello(await direct(port), "no client credential");
  assert.equal(anonymous["x-client-pin"] ?? "", "");
  assert.equal(anonymous["x-client-subject"] ?? "", "");

  const foreign = await direct(port, ["--cert", strangerPki.client.chain, "--key", strangerPki.client.key]);
  assert.equal(foreign.ok, false, `a certificate of another CA was accepted: ${foreign.body}`);
  assert.equal(foreign.status, 0, foreign.body);
  await service.waitForMetric('oxy_tls_handshake_failures_total{endpoint="internal",reason="client_certificate"}', 1);
  assert.equal(await service.metric('oxy_tls_handshake_failures_total{endpoint="internal",reason="client_pin"}'), undefined);
  assert.equal((await requestLines(service, "internal")).length > 0, true);

  // Session resumption is off on an endpoint with client pins (a resumed session would
  // skip the pin check): every reconnection is a full handshake.
  const reconnect = spawnSync("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", "-tls1_2", "-reconnect"], {
    input: "",
    timeout: 15_000,
    encoding: "utf8",
  }).stdout;
  assert.match(reconnect, /^New, TLSv1\.2/m);
  assert.doesNotMatch(reconnect, /^Reused/m);
  await stopClean(oxy);
  await stopClean(service);
});

// ---------------------------------------------------------------------------------------
// 5. Per request, by the egress hook

test("the egress hook gives the upstream's pin per request (upstream_server_pin): the right pin 200, a wrong one 502 pin_mismatch", async () => {
  const service = await startInternal();
  const port = service.port("internal");
  // No `server_pins`: only the hook asks for the raw public key. With an egress hook each
  // request has an upstream connection of its own.
  const endpoint = (name: string, pin: string) => ({
    name,
    listen: ["127.0.0.1:0"],
    http: { upstream: `https://127.0.0.1:${port}`, client: { raw_public_key: front.key } },
    app: { upstream_server_pin: pin },
  });
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.1/32"] },
      endpoints: [endpoint("right", internal.pin), endpoint("wrong", stranger.pin)],
    },
  });

  const right = hello(await throughFront(oxy, "right", port), "the right pin");
  assert.equal(right["x-client-pin"], front.pin);
  // The front's response hook saw what the upstream's TLS showed: the pinned key.
  assert.equal(right["x-upstream-pin"], internal.pin);
  assert.equal(right["x-upstream-cert-sha256"], "");
  assert.match(right["x-upstream-tls-version"] ?? "", /^TLSv1\.3$/);

  const wrong = await throughFront(oxy, "wrong", port);
  assert.equal(wrong.status, 502, `${wrong.stderr}${wrong.body}`);
  assert.equal(
    lastResponse(wrong.body).body.trimEnd(),
    `certificate verification failed for 127.0.0.1:${port}: raw public key ${internal.pin} matches no pin`,
  );
  await oxy.waitForMetric('oxy_tls_upstream_verification_failures_total{endpoint="wrong",reason="pin_mismatch"}', 1);
  assert.equal(await oxy.metric('oxy_tls_upstream_verification_failures_total{endpoint="right",reason="pin_mismatch"}'), undefined);
  // The right one again, after the wrong one: the pin is not left on a shared connection.
  assert.equal(hello(await throughFront(oxy, "right", port), "the right pin again")["x-client-pin"], front.pin);
  await stopClean(oxy);
  await stopClean(service);
});

// ---------------------------------------------------------------------------------------
// 6. HTTP/3 (QUIC: rustls, TLS 1.3)

/** `oxy-client get https://127.0.0.1:PORT/hello` over HTTP/3 with `trust` options: its
 * status (0 when there was none), response headers and body. */
async function h3Hello(port: number, trust: string[]): Promise<{ status: number; headers: Record<string, string>; body: string; stderr: string }> {
  const run = await runClient(["get", `https://127.0.0.1:${port}/hello`, ...trust], { timeoutMs: 15_000 });
  const status = Number(run.stderr.match(/^status (\d{3})$/m)?.[1] ?? 0);
  const headers = Object.fromEntries([...run.stderr.matchAll(/^< ([^:]+): (.*)$/gm)].map((m) => [m[1], m[2]]));
  return { status, headers, body: run.stdout, stderr: run.stderr };
}

test("HTTP/3 over raw public keys both ways: the endpoint presents its key, accepts clients by pin and its hooks see the pin; a wrong pin on either side, no key or an X.509-only client fail the handshake", async () => {
  const service = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        {
          name: "internal",
          listen: ["127.0.0.1:0"],
          tls: { enabled: true, raw_public_key: internal.key, client_auth: "required", client_pins: [front.pin] },
          http: { h3: { enabled: true } },
          app: { respond_path: "/hello" },
        },
      ],
    },
  });
  const port = service.port("internal", "quic");

  const ok = await h3Hello(port, ["--server-pin", internal.pin, "--raw-public-key", front.key]);
  assert.equal(ok.status, 200, ok.stderr);
  assert.equal(ok.body.trimEnd(), "hello from the fixture app");
  assert.equal(ok.headers["x-client-pin"], front.pin, JSON.stringify(ok.headers));
  assert.equal(ok.headers["x-client-subject"] ?? "", "", "a raw public key has no subject");
  assert.equal((await requestLines(service, "internal")).length, 1, "one request reached the hooks");

  // Each fails in the handshake, for its own reason: the client refuses the endpoint's
  // key, or the endpoint (aborted by peer) refuses the client's key or its lack of one.
  const failures: [string, string[], RegExp][] = [
    ["the client expects another server pin", ["--server-pin", stranger.pin, "--raw-public-key", front.key], new RegExp(`QUIC handshake with the proxy failed\\s+Caused by:\\s+the cryptographic handshake failed: error 46: invalid peer certificate: .*raw public key ${internal.pin} matches no pin`)],
    ["the client presents a key the endpoint does not pin", ["--server-pin", internal.pin, "--raw-public-key", stranger.key], /aborted by peer: the cryptographic handshake failed: error 46: invalid peer certificate/],
    ["the client presents no key (client_auth required)", ["--server-pin", internal.pin], /aborted by peer: the cryptographic handshake failed: error 40: peer is incompatible: IncorrectCertificateTypeExtension/],
    ["the client takes certificates only", ["--ca", pki.ca, "--raw-public-key", front.key], /aborted by peer: the cryptographic handshake failed: error 40: peer is incompatible: IncorrectCertificateTypeExtension/],
  ];
  for (const [what, trust, reason] of failures) {
    const r = await h3Hello(port, trust);
    assert.equal(r.status, 0, `${what}: ${r.stderr}`);
    assert.match(r.stderr, reason, what);
  }
  // The endpoint counted and logged the unpinned key as TCP endpoints do.
  await service.waitForMetric('oxy_tls_handshake_failures_total{endpoint="internal",reason="client_pin"}', 1);
  await service.waitForLog(new RegExp(`QUIC handshake failed.*client raw public key ${stranger.pin} matches no pin`));
  // Nothing more reached the hooks.
  const lines = await requestLines(service, "internal");
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0], / 1$/);
  await stopClean(service);
});

// ---------------------------------------------------------------------------------------
// 7. Settings

test("bad pins, and client_pins without client authentication, are settings errors naming the path", async () => {
  const check = endpointSettingsErrors;
  const rpkEndpoint = ["    tls:", "      enabled: true", `      raw_public_key: ${internal.key}`];
  assert.match(
    await check([...rpkEndpoint, "      client_auth: required", '      client_pins: ["zz"]']),
    /:8:\d+: endpoints\[0\]\.tls\.client_pins: "zz" is not a SHA-256 pin \(64 hex digits\)/,
  );
  assert.match(
    await check(["    http:", "      client:", '        server_pins: ["abc"]']),
    /:6:\d+: endpoints\[0\]\.http\.client\.server_pins: "abc" is not a SHA-256 pin \(64 hex digits\)/,
  );
  assert.match(
    await check([...rpkEndpoint, "      client_auth: none", `      client_pins: [${front.pin}]`]),
    /:8:\d+: endpoints\[0\]\.tls\.client_pins: client_pins need client_auth optional or required/,
  );
  // The same pins, well formed (colons between bytes too), pass.
  const colons = front.pin.match(/../g)!.join(":");
  const good = writeConfig(
    ["endpoints:", "  - name: main", "    listen: [127.0.0.1:0]", ...rpkEndpoint, "      client_auth: required", `      client_pins: ["${colons}"]`,
      "    http:", "      client:", `        server_pins: [${internal.pin}]`, ""].join("\n"),
  );
  const ok = await runToExit("oxy", ["--check-config", "-c", good]);
  assert.equal(ok.code, 0, ok.stderr);
});
