// TLS endpoints (BoringSSL): an HTTPS proxy, HTTP/2 over ALPN, certificates by SNI,
// minimum version, and mTLS with client certificate facts for hooks.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { makePki, type TestPki } from "../lib/certs.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { curl } from "../lib/curl.ts";
import { OxyProcess, exchange } from "../lib/oxy.ts";

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
  const oxy = await OxyProcess.start({
    binary: options.binary ?? "oxy",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        {
          name: "secure",
          listen: ["127.0.0.1:0"],
          tls: { enabled: true, certificates: [pki.server, { ...pki.other, server_names: ["other.oxy.test", "*.wild.oxy.test"] }], ...tls },
          http: options.http ?? {},
          app: options.app ?? {},
        },
      ],
    },
  });
  return { oxy, port: oxy.port("secure") };
}

test("an HTTPS proxy: forward requests and CONNECT inside TLS to the proxy", async () => {
  const { oxy, port } = await tlsEndpoint({}, { http: { forward_proxy: true, connect: true } });
  const proxy = ["--proxy", `https://localhost:${port}`, "--proxy-cacert", pki.ca];
  const forward = await curl([...proxy, `http://127.0.0.1:${origin.port}/over-tls`]);
  assert.equal(forward.status, 200, forward.stderr);
  assert.equal(JSON.parse(forward.body).url, "/over-tls");
  const tunnel = await curl([...proxy, "-p", `http://127.0.0.1:${origin.port}/tunnel-over-tls`]);
  assert.equal(tunnel.status, 200, tunnel.stderr);
  assert.equal(await oxy.metric('oxy_tunnel_zero_copy_total{endpoint="secure"}'), undefined, "TLS is not spliced");
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
  const { spawnSync } = await import("node:child_process");
  const served = (name: string) =>
    spawnSync("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", name], { input: "", timeout: 15_000, encoding: "utf8" }).stdout;
  assert.match(served("a.wild.oxy.test"), /subject=CN ?= ?other\.oxy\.test/, "wildcard server name");
  assert.match(served("b.a.wild.oxy.test"), /subject=CN ?= ?localhost/, "a wildcard covers one label");
  assert.match(served("unknown.example"), /subject=CN ?= ?localhost/, "the default certificate");
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
  assert.match(headers, /^x-tls-version: tlsv1\.3\r$/m);
  assert.match(headers, /^x-tls-cipher: tls_\w+\r$/m);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("TLS settings are checked at load: bad cipher list, missing client CA", async () => {
  const r = await OxyProcess.start({
    binary: "oxy",
    settings: {
      endpoints: [
        { name: "a", listen: ["127.0.0.1:0"], tls: { enabled: true, certificates: [pki.server], cipher_list: "NOT-A-CIPHER" } },
        { name: "b", listen: ["127.0.0.1:0"], tls: { enabled: true, certificates: [pki.server], client_auth: "optional" } },
      ],
    },
  }).catch((e: Error) => e);
  assert.ok(r instanceof Error);
  assert.match(r.message, /endpoints\[0\]\.tls\.cipher_list: not a usable cipher list/);
  assert.match(r.message, /endpoints\[1\]\.tls\.client_ca: client_auth needs client_ca/);
});

test("HTTPS upstreams: HTTP/2 by ALPN, a configured CA, host name verification", async () => {
  const { createSecureServer } = await import("node:http2");
  const { readFileSync } = await import("node:fs");
  const serve = async (cert: { chain: string; key: string }) => {
    const server = createSecureServer({ allowHTTP1: true, cert: readFileSync(cert.chain), key: readFileSync(cert.key) }, (req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ version: req.httpVersion, forwarded: req.headers.forwarded ?? null }));
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    return { server, port: (server.address() as { port: number }).port };
  };
  const good = await serve(pki.server);
  const wrongName = await serve(pki.other);

  const start = async (upstreamPort: number, client: Record<string, any>) => {
    const oxy = await OxyProcess.start({
      binary: "oxy",
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        endpoints: [{ name: "rp", listen: ["127.0.0.1:0"], http: { upstream: `https://localhost:${upstreamPort}`, forwarded: true, client } }],
      },
    });
    return { oxy, url: `${oxy.url("rp")}/` };
  };

  const trusted = await start(good.port, { ca_file: pki.ca });
  const ok = await curl([trusted.url]);
  assert.equal(ok.status, 200, ok.stderr);
  assert.deepEqual(JSON.parse(ok.body), { version: "2.0", forwarded: "for=127.0.0.1;proto=http" });
  assert.deepEqual(await trusted.oxy.stop(), { code: 0, signal: null });

  const systemRoots = await start(good.port, {});
  const untrusted = await curl([systemRoots.url]);
  assert.equal(untrusted.status, 502);
  assert.match(untrusted.body, /^certificate verification failed for localhost:\d+: unable to get local issuer certificate/);
  assert.deepEqual(await systemRoots.oxy.stop(), { code: 0, signal: null });

  const mismatch = await start(wrongName.port, { ca_file: pki.ca });
  const bad = await curl([mismatch.url]);
  assert.equal(bad.status, 502);
  assert.match(bad.body, /^certificate verification failed for localhost:\d+: (hostname|Hostname) mismatch/);
  assert.deepEqual(await mismatch.oxy.stop(), { code: 0, signal: null });
  good.server.close();
  wrongName.server.close();
});

test("TLS sessions resume", async () => {
  const { oxy, port } = await tlsEndpoint({});
  const { spawnSync } = await import("node:child_process");
  const s_client = ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", "-tls1_2", "-reconnect"];
  const stdout = spawnSync("openssl", s_client, { input: "", timeout: 15_000, encoding: "utf8" }).stdout;
  assert.match(stdout, /^New, TLSv1\.2/m);
  assert.match(stdout, /^Reused, TLSv1\.2/m);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});
