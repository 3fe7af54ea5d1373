// What Oxy's upstream TLS client refuses, each for its own reason: an HTTPS origin whose
// leaf is signed with SHA-1, carries an RSA-1024 key, has expired or is not yet valid is
// refused with a 502 naming the reason, counted under
// `oxy_tls_upstream_verification_failures_total{reason}`, and never sent a request; an
// origin that speaks only TLS 1.1 fails the handshake (`upstream_tls`); a good leaf from
// the same CA is served. One Oxy process, one reverse-proxy endpoint per origin, each
// trusting the test CA through `http.client.ca_file`. The PKI is made with openssl: the
// CA's own signature is ECDSA with SHA-256 (only the SHA-1 leaf is signed with SHA-1),
// and the expired and not-yet-valid leaves are issued with `openssl ca` and explicit
// dates (OpenSSL 3.0's `x509 -req` has no `-not_before`).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createSecureServer, type SecureServerOptions } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { curl } from "../lib/curl.ts";
import { OxyProcess, until } from "../lib/oxy.ts";

interface Leaf {
  chain: string;
  key: string;
}

/** An HTTPS origin that counts what reaches it. */
interface Origin {
  port: number;
  /** `METHOD path` of every request whose head arrived. */
  requests: string[];
  /** TLS handshakes completed. */
  handshakes: number;
  /** Handshakes that failed, by the server's error message. */
  clientErrors: string[];
  close(): Promise<void>;
}

const ALL_CASES = ["sha1", "weak", "expired", "future", "good", "tls11"] as const;
type Case = (typeof ALL_CASES)[number];

let dir: string;
let ca: string;
const leaves = {} as Record<Exclude<Case, "tls11">, Leaf>;
const origins = {} as Record<Case, Origin>;
let oxy: OxyProcess;

function openssl(args: string[]): string {
  return execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

const LEAF_EXTENSIONS = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";

/** A CSR and key for `CN=name`: EC P-256, or RSA of `rsaBits`. */
function request(name: string, rsaBits?: number): void {
  const key = rsaBits ? ["-newkey", `rsa:${rsaBits}`] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
  openssl(["req", "-new", ...key, "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`]);
}

/** Signs `name`'s CSR with the CA for two days, with the digest `md`. */
function sign(name: string, md: "sha1" | "sha256"): Leaf {
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", `-${md}`, "-out", `${name}.pem`, "-extfile", "leaf.ext"]);
  return { chain: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

/** `YYYYMMDDHHMMSSZ` (GeneralizedTime, as `openssl ca -startdate` takes it) `days` from now. */
function daysFromNow(days: number): string {
  return new Date(Date.now() + days * 86_400_000).toISOString().replace(/[-:T]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Signs `name`'s CSR with `openssl ca`, valid from `start` to `end` (days from now). */
function signDated(name: string, start: number, end: number): Leaf {
  openssl(["ca", "-batch", "-notext", "-config", "ca.cnf", "-extensions", "leaf", "-in", `${name}.csr`, "-out", `${name}.pem`, "-startdate", daysFromNow(start), "-enddate", daysFromNow(end)]);
  return { chain: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

/** Serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on 127.0.0.1 with `leaf`, answering 200. */
async function serve(leaf: Leaf, tls: SecureServerOptions = {}): Promise<Origin> {
  const sockets = new Set<Socket>();
  const origin = {
    port: 0,
    requests: [] as string[],
    handshakes: 0,
    clientErrors: [] as string[],
    close: async () => {},
  };
  const server = createSecureServer({ allowHTTP1: true, cert: readFileSync(leaf.chain), key: readFileSync(leaf.key), ...tls }, (req, res) => {
    origin.requests.push(`${req.method} ${req.url}`);
    res.on("error", () => {});
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ version: req.httpVersion }));
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("secureConnection", () => (origin.handshakes += 1));
  server.on("tlsClientError", (e: Error) => origin.clientErrors.push(e.message));
  server.on("sessionError", () => {});
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  origin.port = (server.address() as AddressInfo).port;
  origin.close = () =>
    new Promise<void>((ok) => {
      server.close(() => ok());
      for (const socket of sockets) socket.destroy();
    });
  return origin;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "oxy-upstream-pki-"));
  openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-sha256",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Oxy Upstream Test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  ca = join(dir, "ca.pem");
  writeFileSync(join(dir, "leaf.ext"), LEAF_EXTENSIONS);
  // A minimal `openssl ca` setup, for leaves with dates in the past or the future.
  mkdirSync(join(dir, "issued"));
  writeFileSync(join(dir, "index.txt"), "");
  writeFileSync(join(dir, "serial"), "1000\n");
  writeFileSync(
    join(dir, "ca.cnf"),
    [
      "[ca]", "default_ca = test",
      "[test]", "database = index.txt", "new_certs_dir = issued", "serial = serial",
      "certificate = ca.pem", "private_key = ca.key", "default_md = sha256", "policy = any",
      "unique_subject = no", "copy_extensions = none",
      "[any]", "commonName = supplied",
      "[leaf]", ...LEAF_EXTENSIONS.trim().split("\n").map((line) => line.replace("=", " = ")),
      "",
    ].join("\n"),
  );

  for (const name of ["sha1-leaf", "weak-leaf", "expired-leaf", "future-leaf", "good-leaf"]) {
    request(name, name === "weak-leaf" ? 1024 : undefined);
  }
  leaves.sha1 = sign("sha1-leaf", "sha1");
  leaves.weak = sign("weak-leaf", "sha256");
  leaves.expired = signDated("expired-leaf", -10, -1);
  leaves.future = signDated("future-leaf", 1, 10);
  leaves.good = sign("good-leaf", "sha256");

  // The fixtures are what they claim: only the SHA-1 leaf is signed with SHA-1.
  const text = (pem: string) => openssl(["x509", "-in", pem, "-noout", "-text"]);
  assert.match(text(ca), /Signature Algorithm: ecdsa-with-SHA256/);
  assert.match(text(leaves.sha1.chain), /Signature Algorithm: ecdsa-with-SHA1\b/);
  assert.match(text(leaves.weak.chain), /Public-Key: \(1024 bit\)[\s\S]*Signature Algorithm: ecdsa-with-SHA256/);
  assert.match(text(leaves.good.chain), /Signature Algorithm: ecdsa-with-SHA256/);

  // Node's OpenSSL 3 refuses to load a SHA-1-signed certificate at its default security
  // level ("ca md too weak"): level 0 lets the origin serve it. An RSA-1024 key loads at
  // the default level (1). TLS 1.1 needs level 0 for its SHA-1 handshake signatures.
  const legacy = { ciphers: "DEFAULT@SECLEVEL=0" };
  origins.sha1 = await serve(leaves.sha1, legacy);
  origins.weak = await serve(leaves.weak);
  origins.expired = await serve(leaves.expired);
  origins.future = await serve(leaves.future);
  origins.good = await serve(leaves.good);
  origins.tls11 = await serve(leaves.good, { ...legacy, minVersion: "TLSv1.1", maxVersion: "TLSv1.1" });

  oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: ALL_CASES.map((name) => ({
        name,
        listen: ["127.0.0.1:0"],
        http: { upstream: `https://localhost:${origins[name].port}`, client: { ca_file: ca } },
      })),
    },
  });
});

after(async () => {
  await Promise.all(Object.values(origins).map((origin) => origin.close()));
});

const failures = (endpoint: Case, reason: string) => `oxy_tls_upstream_verification_failures_total{endpoint="${endpoint}",reason="${reason}"}`;
const httpErrors = (endpoint: Case, reason: string) => `oxy_http_errors_total{endpoint="${endpoint}",reason="${reason}"}`;

/** GET / through endpoint `name`; asserts a 502 whose body is the certificate refusal
 * `reason` counted under `label` (and under no other), and that the origin got no request. */
async function refused(name: Case, label: string, reason: string): Promise<void> {
  const res = await curl([`${oxy.url(name)}/`]);
  const origin = origins[name];
  assert.equal(res.status, 502, `${res.stderr}\n${oxy.logs()}`);
  assert.equal(res.body, `certificate verification failed for localhost:${origin.port}: ${reason}\n`);
  await oxy.waitForMetric(failures(name, label), 1);
  await oxy.waitForMetric(httpErrors(name, "upstream_certificate"), 1);
  const metrics = (await oxy.telemetry("/metrics")).body;
  const labels = [...metrics.matchAll(new RegExp(`^oxy_tls_upstream_verification_failures_total\\{endpoint="${name}",reason="(\\w+)"\\}`, "gm"))];
  assert.deepEqual(labels.map((m) => m[1]), [label], "one reason only");
  assert.deepEqual(origin.requests, [], "the origin received no request");
}

test("a leaf signed with SHA-1 is refused after the handshake: sha1", async () => {
  await refused("sha1", "sha1", "the certificate of sha1-leaf is signed with SHA-1");
  // The chain and name verified; the handshake completed and then nothing was sent.
  await until(() => (origins.sha1.handshakes === 1 ? true : undefined), () => `one handshake with the sha1 origin (${origins.sha1.handshakes}, ${origins.sha1.clientErrors})`);
});

test("a leaf with an RSA-1024 key is refused after the handshake: weak_key", async () => {
  await refused("weak", "weak_key", "the certificate of weak-leaf has a 1024-bit key");
  await until(() => (origins.weak.handshakes === 1 ? true : undefined), () => `one handshake with the weak-key origin (${origins.weak.handshakes}, ${origins.weak.clientErrors})`);
});

test("an expired leaf is refused: expired", async () => {
  await refused("expired", "expired", "certificate has expired");
  assert.equal(origins.expired.handshakes, 0, "the handshake was aborted");
});

test("a leaf not yet valid is refused: not_yet_valid", async () => {
  await refused("future", "not_yet_valid", "certificate is not yet valid");
  assert.equal(origins.future.handshakes, 0, "the handshake was aborted");
});

test("a good leaf from the same CA is served", async () => {
  const res = await curl([`${oxy.url("good")}/ok`]);
  assert.equal(res.status, 200, `${res.stderr}\n${oxy.logs()}`);
  assert.deepEqual(JSON.parse(res.body), { version: "2.0" });
  assert.deepEqual(origins.good.requests, ["GET /ok"]);
  const metrics = (await oxy.telemetry("/metrics")).body;
  assert.doesNotMatch(metrics, /^oxy_tls_upstream_verification_failures_total\{endpoint="good"/m);
  assert.doesNotMatch(metrics, /^oxy_http_errors_total\{endpoint="good"/m);
});

test("an origin that speaks only TLS 1.1 fails the handshake: upstream_tls", async () => {
  const res = await curl([`${oxy.url("tls11")}/`]);
  assert.equal(res.status, 502, `${res.stderr}\n${oxy.logs()}`);
  assert.match(res.body, /^TLS with the upstream failed: /);
  await oxy.waitForMetric(httpErrors("tls11", "upstream_tls"), 1);
  const origin = origins.tls11;
  // The origin saw a ClientHello offering nothing below TLS 1.2.
  await until(() => (origin.clientErrors.length > 0 ? true : undefined), "the TLS 1.1 origin's handshake error");
  assert.match(origin.clientErrors[0], /unsupported protocol/);
  assert.equal(origin.handshakes, 0);
  assert.deepEqual(origin.requests, []);
  const metrics = (await oxy.telemetry("/metrics")).body;
  assert.doesNotMatch(metrics, /^oxy_tls_upstream_verification_failures_total\{endpoint="tls11"/m, "not a certificate refusal");
});

test("Oxy exits cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
});
