// TLS compliance policies (BoringSSL's): an endpoint's `tls.policy` (`fips_202205`,
// `wpa3_192_202304`), a per-connection choice by the ingress hook (the fixture's
// `fips_local_ip`: one endpoint serves default TLS on 127.0.0.1 and FIPS on 127.0.0.2),
// the policy on HTTP/3 (QUIC's TLS 1.3 suites and groups), the policy towards upstreams
// (`http.client.tls_policy`, and per request by the egress hook: the fixture's
// `fips_upstream_host`), and a bad policy name in settings. Probes are openssl s_client
// (a group, a TLS 1.2 cipher, a TLS 1.3 suite the policy does not allow), curl and
// aioquic (interop/h3_get.py).

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { makePki, type TestPki } from "../lib/certs.ts";
import { curl, lastResponse } from "../lib/curl.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { h3Get } from "../lib/interop.ts";
import { endpointSettingsErrors, exchange, OxyProcess, portOf, track, until } from "../lib/oxy.ts";

let pki: TestPki;
let dns: DnsServer;

before(async () => {
  // The upstream tests reach the ChaCha20 origin by these names.
  pki = makePki(["chacha.oxy.test", "other.oxy.test"]);
  dns = await startDnsServer({ "chacha.oxy.test": ["127.0.0.1"], "other.oxy.test": ["127.0.0.1"] });
});

after(async () => {
  await dns.close();
});

/** Stops `oxy` and checks that it exited cleanly. */
async function stopClean(oxy: OxyProcess) {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
}

// ---------------------------------------------------------------------------------------
// Probes

interface Probe {
  stdout: string;
  stderr: string;
  code: number | null;
}

/** `openssl s_client -connect address -servername serverName ...args`, with empty stdin
 * (it ends once the handshake is over, or has failed). */
function sClient(address: string, args: string[], serverName = "localhost"): Promise<Probe> {
  const child = track(
    spawn("openssl", ["s_client", "-connect", address, "-servername", serverName, ...args], { stdio: ["pipe", "pipe", "pipe"] }),
  );
  child.stdin!.end();
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  return new Promise((ok) =>
    child.on("close", (code) => {
      clearTimeout(timer);
      ok({ stdout, stderr, code });
    }),
  );
}

/** The version and cipher s_client negotiated (`TLSv1.3 TLS_AES_128_GCM_SHA256`), or
 * undefined when the handshake failed. */
function negotiated(probe: Probe): string | undefined {
  const m = /^New, (TLSv1\.[23]), Cipher is (\S+)$/m.exec(probe.stdout);
  return m ? `${m[1]} ${m[2]}` : undefined;
}

function assertAccepted(probe: Probe, what: string): string {
  const got = negotiated(probe);
  assert.ok(got, `${what}: the handshake failed:\n${probe.stdout}${probe.stderr}`);
  return got;
}

/** The server refused the handshake with a handshake_failure alert (40). */
function assertRefused(probe: Probe, what: string) {
  assert.equal(negotiated(probe), undefined, `${what}: the handshake succeeded:\n${probe.stdout}`);
  assert.match(probe.stdout, /^New, \(NONE\), Cipher is \(NONE\)$/m, what);
  assert.match(probe.stderr, /alert handshake failure[\s\S]*SSL alert number 40/, `${what}:\n${probe.stderr}`);
  assert.notEqual(probe.code, 0, what);
}

/** What each probe offers: a group, a TLS 1.2 cipher and a TLS 1.3 suite FIPS 202205 does
 * not allow, and a group it allows. */
const X25519 = ["-groups", "X25519"];
const TLS12_CHACHA = ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"];
const TLS13_CHACHA = ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"];
const P256 = ["-groups", "P-256"];

/** The approved AEAD suites of FIPS 202205, by BoringSSL's names. */
const FIPS_TLS13 = /^TLS_AES_(128_GCM_SHA256|256_GCM_SHA384)$/;
const FIPS_TLS12 = /^ECDHE-(ECDSA|RSA)-AES(128-GCM-SHA256|256-GCM-SHA384)$/;

/** `GET https://localhost:PORT/hello` to `ip` with curl (trusting `ca`), with `more`
 * curl options: status and response headers. */
async function hello(ip: string, port: number, ca: string, more: string[] = []) {
  const r = await curl(["-D", "-", "--cacert", ca, "--resolve", `localhost:${port}:${ip}`, ...more, `https://localhost:${port}/hello`]);
  assert.equal(r.status, 200, r.stderr);
  return lastResponse(r.body).headers;
}

// ---------------------------------------------------------------------------------------
// 1-3. Endpoint policies

test("the ingress hook holds one listener's connections to FIPS 202205: non-approved groups and suites are refused there only", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        {
          name: "mixed",
          listen: ["127.0.0.1:0", "127.0.0.2:0"],
          tls: { enabled: true, certificates: [pki.server] },
          app: { fips_local_ip: "127.0.0.2", respond_path: "/hello" },
        },
      ],
    },
  });
  const [plain, fips] = oxy.endpoint("mixed").listeners.map((l) => l.address);
  assert.match(plain, /^127\.0\.0\.1:\d+$/);
  assert.match(fips, /^127\.0\.0\.2:\d+$/);

  // The default listener takes all four.
  assert.match(assertAccepted(await sClient(plain, X25519), "X25519 on .1"), /^TLSv1\.3 /);
  assert.equal(assertAccepted(await sClient(plain, TLS12_CHACHA), "TLS 1.2 ChaCha20 on .1"), "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305");
  assert.equal(assertAccepted(await sClient(plain, TLS13_CHACHA), "TLS 1.3 ChaCha20 on .1"), "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256");
  assert.match(assertAccepted(await sClient(plain, P256), "P-256 on .1"), /^TLSv1\.3 /);

  // The FIPS listener refuses the first three and takes P-256 with an AES-GCM suite.
  assertRefused(await sClient(fips, X25519), "X25519 on .2");
  assertRefused(await sClient(fips, TLS12_CHACHA), "TLS 1.2 ChaCha20 on .2");
  assertRefused(await sClient(fips, TLS13_CHACHA), "TLS 1.3 ChaCha20 on .2");
  const [version, cipher] = assertAccepted(await sClient(fips, P256), "P-256 on .2").split(" ");
  assert.equal(version, "TLSv1.3");
  assert.match(cipher, FIPS_TLS13);
  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="mixed",reason="handshake"}', 3);

  // The hooks see the policy the connection was held to.
  const onPlain = await hello("127.0.0.1", portOf(plain), pki.ca);
  assert.equal(onPlain["x-tls-policy"], "default");
  const onFips = await hello("127.0.0.2", portOf(fips), pki.ca);
  assert.equal(onFips["x-tls-policy"], "fips_202205");
  assert.equal(onFips["x-tls-version"], "TLSv1.3");
  assert.match(onFips["x-tls-cipher"], FIPS_TLS13);
  // Over TLS 1.2, an approved ECDHE AES-GCM suite on .2; ChaCha20 still served on .1.
  const fips12 = await hello("127.0.0.2", portOf(fips), pki.ca, ["--tls-max", "1.2"]);
  assert.deepEqual([fips12["x-tls-policy"], fips12["x-tls-version"]], ["fips_202205", "TLSv1.2"]);
  assert.match(fips12["x-tls-cipher"], FIPS_TLS12);
  const plain12 = await hello("127.0.0.1", portOf(plain), pki.ca, ["--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305"]);
  assert.deepEqual([plain12["x-tls-policy"], plain12["x-tls-cipher"]], ["default", "ECDHE-ECDSA-CHACHA20-POLY1305"]);
  // A ChaCha20-only curl is refused on .2.
  const refused = await curl(["--cacert", pki.ca, "--resolve", `localhost:${portOf(fips)}:127.0.0.2`, "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305", `https://localhost:${portOf(fips)}/hello`]);
  assert.equal(refused.ok, false);
  assert.match(refused.stderr, /handshake failure/);

  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="mixed",reason="handshake"}', 4);
  assert.match((await oxy.telemetry("/metrics")).body, /^oxy_tls_handshakes_total\{endpoint="mixed",version="TLSv1\.2"\} 3$/m);
  await stopClean(oxy);
});

test("tls.policy fips_202205 on an endpoint: X25519 alone is refused, P-256 is served, whichever certificate SNI picks", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        {
          name: "fips",
          listen: ["127.0.0.1:0"],
          tls: { enabled: true, certificates: [pki.server, { ...pki.other, server_names: ["other.oxy.test"] }], policy: "fips_202205" },
          app: { respond_path: "/hello" },
        },
      ],
    },
  });
  const address = oxy.address("fips");
  assertRefused(await sClient(address, X25519), "X25519");
  assertRefused(await sClient(address, TLS13_CHACHA), "TLS 1.3 ChaCha20");
  assert.match(assertAccepted(await sClient(address, P256), "P-256"), /^TLSv1\.3 TLS_AES_(128|256)_GCM/);
  // The certificate chosen by SNI does not lift the policy.
  assertRefused(await sClient(address, X25519, "other.oxy.test"), "X25519 for other.oxy.test");
  assertRefused(await sClient(address, TLS12_CHACHA, "other.oxy.test"), "TLS 1.2 ChaCha20 for other.oxy.test");
  const other = await sClient(address, P256, "other.oxy.test");
  assert.match(assertAccepted(other, "P-256 for other.oxy.test"), /^TLSv1\.3 TLS_AES_(128|256)_GCM/);
  assert.match(other.stdout, /subject=CN ?= ?other\.oxy\.test/);
  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="fips",reason="handshake"}', 4);
  const headers = await hello("127.0.0.1", oxy.port("fips"), pki.ca);
  assert.equal(headers["x-tls-policy"], "fips_202205");
  assert.match(headers["x-tls-cipher"], FIPS_TLS13);
  await stopClean(oxy);
});

/** A P-384 ECDSA CA and a `localhost` leaf it signs with SHA-384 (EC P-384 key). */
function makeP384Pki(): { ca: string; chain: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "oxy-p384-"));
  const openssl = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384", "-nodes",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Oxy Test P-384 CA",
  ]);
  openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
  writeFileSync(join(dir, "leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  openssl(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-sha384", "-out", "leaf.pem", "-extfile", "leaf.ext"]);
  return { ca: join(dir, "ca.pem"), chain: join(dir, "leaf.pem"), key: join(dir, "leaf.key") };
}

test("tls.policy wpa3_192_202304 with a P-384 ECDSA certificate: P-256 is refused, P-384 gets AES-256-GCM", async () => {
  const p384 = makeP384Pki();
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        {
          name: "wpa3",
          listen: ["127.0.0.1:0"],
          tls: { enabled: true, certificates: [{ chain: p384.chain, key: p384.key }], policy: "wpa3_192_202304" },
          app: { respond_path: "/hello" },
        },
      ],
    },
  });
  const address = oxy.address("wpa3");
  const verify = ["-CAfile", p384.ca, "-verify_return_error"];
  assertRefused(await sClient(address, [...P256, ...verify]), "P-256");
  const p384Probe = await sClient(address, ["-groups", "P-384", ...verify]);
  assert.equal(assertAccepted(p384Probe, "P-384"), "TLSv1.3 TLS_AES_256_GCM_SHA384");
  assert.match(p384Probe.stdout, /Verify return code: 0 \(ok\)/);
  assert.match(p384Probe.stdout, /Peer signature type: ECDSA/);
  // TLS 1.3 AES-128-GCM is not in the 192-bit suite either.
  assertRefused(await sClient(address, ["-groups", "P-384", "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"]), "TLS 1.3 AES-128-GCM");
  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="wpa3",reason="handshake"}', 2);
  const headers = await hello("127.0.0.1", oxy.port("wpa3"), p384.ca);
  assert.deepEqual([headers["x-tls-policy"], headers["x-tls-cipher"]], ["wpa3_192_202304", "TLS_AES_256_GCM_SHA384"]);
  await stopClean(oxy);
});

// ---------------------------------------------------------------------------------------
// 4. HTTP/3

test("HTTP/3 under fips_202205: AES-GCM clients are served, a ChaCha20-only client is refused (and served by a default endpoint)", async () => {
  const tls = { enabled: true, certificates: [pki.server] };
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        { name: "h3fips", listen: ["127.0.0.1:0"], tls: { ...tls, policy: "fips_202205" }, http: { h3: { enabled: true } }, app: { respond_path: "/hello" } },
        { name: "h3default", listen: ["127.0.0.1:0"], tls, http: { h3: { enabled: true } }, app: { respond_path: "/hello" } },
      ],
    },
  });
  const get = (endpoint: string, cipherSuites?: ("AES_128_GCM_SHA256" | "CHACHA20_POLY1305_SHA256")[]) =>
    h3Get({ connect: `127.0.0.1:${oxy.port(endpoint, "quic")}`, serverName: "localhost", ca: pki.ca, paths: ["/hello"], cipherSuites });

  const fips = await get("h3fips");
  assert.equal(fips.error, undefined, fips.log);
  assert.equal(fips.responses[0]?.status, 200, fips.log);
  assert.equal(fips.responses[0].headers["x-tls-policy"], "fips_202205");
  const aes128 = await get("h3fips", ["AES_128_GCM_SHA256"]);
  assert.equal(aes128.responses[0]?.status, 200, aes128.log);

  const chachaToFips = await get("h3fips", ["CHACHA20_POLY1305_SHA256"]);
  assert.equal(chachaToFips.code, 1, chachaToFips.log);
  assert.deepEqual(chachaToFips.responses, []);
  // CRYPTO_ERROR 0x100 + handshake_failure (40 = 0x28).
  assert.match(chachaToFips.error ?? "", /error_code=0x128\b.*NoCipherSuitesInCommon/, chachaToFips.log);

  const chachaToDefault = await get("h3default", ["CHACHA20_POLY1305_SHA256"]);
  assert.equal(chachaToDefault.error, undefined, chachaToDefault.log);
  assert.equal(chachaToDefault.responses[0]?.status, 200, chachaToDefault.log);
  assert.equal(chachaToDefault.responses[0].headers["x-tls-policy"], "default");

  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="h3fips",reason="handshake"}', 1);
  assert.equal(await oxy.metric('oxy_tls_handshake_failures_total{endpoint="h3default",reason="handshake"}'), undefined);
  await stopClean(oxy);
});

// ---------------------------------------------------------------------------------------
// 5. Towards upstreams

interface ChachaOrigin {
  port: number;
  /** Request paths received. */
  seen: string[];
  /** TLS handshakes that failed (a client that offered no ChaCha20 suite). */
  readonly tlsErrors: number;
  close(): Promise<void>;
}

/** An HTTPS origin (HTTP/1.1) on 127.0.0.1 that speaks TLS 1.2 with
 * ECDHE-ECDSA-CHACHA20-POLY1305 only (the PKI server certificate: EC P-256). */
async function startChachaOrigin(): Promise<ChachaOrigin> {
  const seen: string[] = [];
  const state = { tlsErrors: 0 };
  const sockets = new Set<Socket>();
  const server = createHttpsServer(
    {
      cert: readFileSync(pki.server.chain),
      key: readFileSync(pki.server.key),
      ciphers: "ECDHE-ECDSA-CHACHA20-POLY1305",
      maxVersion: "TLSv1.2",
      minVersion: "TLSv1.2",
    },
    (req, res) => {
      seen.push(req.url ?? "");
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`chacha origin: ${req.url} over ${(req.socket as any).getCipher?.().name}`);
    },
  );
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("tlsClientError", () => (state.tlsErrors += 1));
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    get tlsErrors() {
      return state.tlsErrors;
    },
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

test("http.client.tls_policy: fips_202205 will not speak to a ChaCha20-only upstream (502); default will", async () => {
  const origin = await startChachaOrigin();
  try {
    const reverse = (name: string, tls_policy: string) => ({
      name,
      listen: ["127.0.0.1:0"],
      http: { upstream: `https://localhost:${origin.port}`, client: { ca_file: pki.ca, tls_policy } },
    });
    const oxy = await OxyProcess.start({
      binary: "oxy",
      settings: { egress: { allow: ["127.0.0.1/32"] }, endpoints: [reverse("held", "fips_202205"), reverse("free", "default")] },
    });
    const held = await curl([`${oxy.url("held")}/held`]);
    assert.equal(held.status, 502, held.body);
    // The origin found no cipher in common and said so with a handshake_failure alert.
    assert.match(held.body, /^TLS with the upstream failed: .*SSLV3_ALERT_HANDSHAKE_FAILURE/);
    await oxy.waitForMetric('oxy_http_errors_total{endpoint="held",reason="upstream_tls"}', 1);
    assert.deepEqual(origin.seen, [], "the FIPS client reached the origin's HTTP");
    await until(() => (origin.tlsErrors >= 1 ? true : undefined), "the FIPS client's handshake at the origin");

    const free = await curl([`${oxy.url("free")}/free`]);
    assert.equal(free.status, 200, free.body);
    assert.equal(free.body, "chacha origin: /free over ECDHE-ECDSA-CHACHA20-POLY1305");
    assert.deepEqual(origin.seen, ["/free"]);
    await stopClean(oxy);
  } finally {
    await origin.close();
  }
});

// A forward proxy takes absolute-form `https://` requests (HTTP/1.1) and speaks TLS to
// the target itself, so the egress hook's per-request policy applies there (curl would
// send CONNECT for an https URL, which tunnels the client's own TLS).
test("the egress hook holds one upstream host to FIPS 202205: that host gets 502, another host on the same origin 200", async () => {
  const origin = await startChachaOrigin();
  try {
    const oxy = await OxyProcess.start({
      binary: "fixture-app",
      settings: {
        dns: { groups: [{ servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
        egress: { allow: ["127.0.0.1/32"] },
        endpoints: [
          {
            name: "fwd",
            listen: ["127.0.0.1:0"],
            http: { forward_proxy: true, client: { ca_file: pki.ca } },
            app: { fips_upstream_host: "chacha.oxy.test" },
          },
        ],
      },
    });
    const get = async (host: string, path: string) => {
      const authority = `${host}:${origin.port}`;
      const reply = (await exchange(oxy.port("fwd"), `GET https://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`)).toString();
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(reply)?.[1] ?? 0);
      return { status, reply };
    };

    const held = await get("chacha.oxy.test", "/held");
    assert.equal(held.status, 502, held.reply);
    assert.match(held.reply, /\r\n\r\nTLS with the upstream failed: .*SSLV3_ALERT_HANDSHAKE_FAILURE/);
    assert.deepEqual(origin.seen, [], "the FIPS request reached the origin's HTTP");
    await until(() => (origin.tlsErrors >= 1 ? true : undefined), "the FIPS request's handshake at the origin");
    assert.ok(dns.queries.includes("chacha.oxy.test/A"), JSON.stringify(dns.queries));

    const other = await get("other.oxy.test", "/other");
    assert.equal(other.status, 200, other.reply);
    assert.match(other.reply, /\r\nchacha origin: \/other over ECDHE-ECDSA-CHACHA20-POLY1305\r\n/);
    // Again, in the other order: the policy is per request, not left on a pooled connection.
    const heldAgain = await get("chacha.oxy.test", "/held-again");
    assert.equal(heldAgain.status, 502, heldAgain.reply);
    assert.deepEqual(origin.seen, ["/other"]);
    await oxy.waitForMetric('oxy_http_errors_total{endpoint="fwd",reason="upstream_tls"}', 2);
    await stopClean(oxy);
  } finally {
    await origin.close();
  }
});

// ---------------------------------------------------------------------------------------
// 6. Settings

test("an unknown policy name is a settings error naming tls.policy, or http.client.tls_policy", async () => {
  // A value of the wrong type stops the reading of its endpoint: one file each.
  const check = endpointSettingsErrors;
  const tls = await check([
    "    tls:",
    "      enabled: true",
    `      certificates: [{ chain: ${pki.server.chain}, key: ${pki.server.key} }]`,
    "      policy: fips",
  ]);
  assert.match(tls, /:7:\d+: endpoints\[0\]\.tls\.policy: unknown variant `fips`, expected one of `default`, `fips_202205`, `wpa3_192_202304`/);
  const client = await check(["    http:", "      client:", "        tls_policy: FIPS_202205"]);
  assert.match(client, /:6:\d+: endpoints\[0\]\.http\.client\.tls_policy: unknown variant `FIPS_202205`/);
});
