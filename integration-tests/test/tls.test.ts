// TLS endpoints (BoringSSL): an HTTPS proxy, HTTP/2 over ALPN, certificates by SNI,
// minimum version, and mTLS with client certificate facts for hooks.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { makePki, type TestPki } from "../lib/certs.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, exchange, freePort } from "../lib/oxy.ts";

const run = promisify(execFile);

let pki: TestPki;
let origin: Origin;

before(async () => {
  pki = makePki();
  origin = await startOrigin();
});

after(async () => {
  await origin.close();
});

async function tlsEndpoint(tls: Record<string, any>, options: { binary?: string; http?: Record<string, any>; app?: Record<string, any> } = {}) {
  const port = await freePort();
  const oxy = await OxyProcess.start({
    binary: options.binary ?? "oxy",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        {
          name: "secure",
          listen: [`127.0.0.1:${port}`],
          tls: { enabled: true, certificates: [pki.server, { ...pki.other, server_names: ["other.oxy.test"] }], ...tls },
          http: options.http ?? {},
          app: options.app ?? {},
        },
      ],
    },
  });
  return { oxy, port };
}

async function curl(args: string[]) {
  try {
    const { stdout } = await run("curl", ["-sS", "-w", "\n%{http_code} %{http_version}", ...args], { timeout: 15_000 });
    const cut = stdout.lastIndexOf("\n");
    const [status, version] = stdout.slice(cut + 1).split(" ");
    return { ok: true, status: Number(status), version, body: stdout.slice(0, cut), stderr: "" };
  } catch (e: any) {
    return { ok: false, status: 0, version: "", body: "", stderr: String(e.stderr ?? e.message) };
  }
}

test("an HTTPS proxy: forward requests and CONNECT inside TLS to the proxy", async () => {
  const { oxy, port } = await tlsEndpoint({});
  const proxy = ["--proxy", `https://localhost:${port}`, "--proxy-cacert", pki.ca];
  const forward = await curl([...proxy, `http://127.0.0.1:${origin.port}/over-tls`]);
  assert.equal(forward.status, 200, forward.stderr);
  assert.equal(JSON.parse(forward.body).url, "/over-tls");
  const tunnel = await curl([...proxy, "-p", `http://127.0.0.1:${origin.port}/tunnel-over-tls`]);
  assert.equal(tunnel.status, 200, tunnel.stderr);
  assert.match((await oxy.telemetry("/metrics")).body, /^oxy_tls_handshakes_total\{endpoint="secure",version="TLSv1\.3"\} [1-9]/m);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("HTTP/2 is negotiated by ALPN, and certificates are chosen by SNI", async () => {
  const { oxy, port } = await tlsEndpoint({}, { http: { upstream: `http://127.0.0.1:${origin.port}` } });
  const h2 = await curl(["--http2", "--cacert", pki.ca, `https://localhost:${port}/h2`]);
  assert.equal(h2.status, 200, h2.stderr);
  assert.equal(h2.version, "2");
  const h1 = await curl(["--http1.1", "--cacert", pki.ca, `https://localhost:${port}/h1`]);
  assert.deepEqual([h1.status, h1.version], [200, "1.1"]);
  const other = await curl(["--cacert", pki.ca, "--resolve", `other.oxy.test:${port}:127.0.0.1`, `https://other.oxy.test:${port}/sni`]);
  assert.equal(other.status, 200, `the other.oxy.test certificate was not served: ${other.stderr}`);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("min_version tls1_3 refuses TLS 1.2 clients; plain text to a TLS port is a counted failure", async () => {
  const { oxy, port } = await tlsEndpoint({ min_version: "tls1_3" }, { http: { upstream: `http://127.0.0.1:${origin.port}` } });
  const old = await curl(["--tls-max", "1.2", "--cacert", pki.ca, `https://localhost:${port}/`]);
  assert.equal(old.ok, false);
  const modern = await curl(["--tlsv1.3", "--cacert", pki.ca, `https://localhost:${port}/`]);
  assert.equal(modern.status, 200, modern.stderr);
  await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="secure",reason="handshake"}', 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("mTLS: a required client certificate is checked and its facts reach the hooks", async () => {
  const { oxy, port } = await tlsEndpoint(
    { client_auth: "required", client_ca: pki.ca },
    { binary: "fixture-app", app: { respond_path: "/whoami" } },
  );
  const anonymous = await curl(["--cacert", pki.ca, `https://localhost:${port}/whoami`]);
  assert.equal(anonymous.ok, false);
  await oxy.waitForMetric('oxy_tls_handshake_failures_total{endpoint="secure",reason="client_certificate"}', 1);

  const alice = await curl(["-D", "-", "--cacert", pki.ca, "--cert", pki.client.chain, "--key", pki.client.key, `https://localhost:${port}/whoami`]);
  assert.equal(alice.status, 200, alice.stderr);
  const headers = alice.body.toLowerCase();
  assert.match(headers, /^x-client-subject: cn=alice,o=oxy tests\r$/m);
  assert.match(headers, /^x-client-sans: dns:alice\.oxy\.test email:alice@oxy\.test\r$/m);
  assert.match(headers, /^x-client-sha256: [0-9a-f]{64}\r$/m);
  assert.match(headers, /^x-tls-sni: localhost\r$/m);
  assert.match(headers, /^x-tls-alpn: h2\r$/m);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("TLS settings are checked at load: bad cipher list, missing client CA", async () => {
  const port = await freePort();
  const r = await OxyProcess.start({
    binary: "oxy",
    settings: {
      endpoints: [
        { name: "a", listen: [`127.0.0.1:${port}`], tls: { enabled: true, certificates: [pki.server], cipher_list: "NOT-A-CIPHER" } },
        { name: "b", listen: [`127.0.0.1:${await freePort()}`], tls: { enabled: true, certificates: [pki.server], client_auth: "optional" } },
      ],
    },
  }).catch((e: Error) => e);
  assert.ok(r instanceof Error);
  assert.match(r.message, /endpoints\[0\]\.tls\.cipher_list: not a usable cipher list/);
  assert.match(r.message, /endpoints\[1\]\.tls\.client_ca: client_auth needs client_ca/);
});
