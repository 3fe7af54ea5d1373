// What Oxy's upstream TLS client refuses, each for its own reason: an HTTPS origin whose
// leaf is signed with SHA-1, carries an RSA-1024 key, has expired or is not yet valid is
// refused with a 502 naming the reason, counted under
// `oxy_tls_upstream_verification_failures_total{reason}`, and never sent a request; an
// origin that speaks only TLS 1.1 fails the handshake (`upstream_tls`); a good leaf from
// the same CA is served; a new connection to an origin resumes the TLS session of an
// earlier one (the origin sees `isSessionReused()`). One Oxy process, one reverse-proxy
// endpoint per origin, each trusting the test CA through `http.client.ca_file`. The PKI is made with openssl: the
// CA's own signature is ECDSA with SHA-256 (only the SHA-1 leaf is signed with SHA-1),
// and the expired and not-yet-valid leaves are issued with `openssl ca` and explicit
// dates (OpenSSL 3.0's `x509 -req` has no `-not_before`).
//
// Chain completion from the caIssuers URL (AIA): a second PKI, root → intermediate →
// leaves, whose origins send only the leaf (HTTP/1.1 with `connection: close`, so every
// request is a new connection). Each leaf's AIA names a URL on a small HTTP server that
// serves the intermediate's DER and counts what it is asked. Oxy fetches it once and
// keeps it (two requests, one fetch); the path must still end at `ca_file` (an unrelated
// root is refused even with the intermediate fetched); a 404 and a URL the egress policy
// refuses (`egress.allow` covers 127.0.0.1 only; the server on 127.0.0.2 sees no
// connection) are 502s saying why. All are counted as `unknown_issuer`.
//
// Revocation by CRL: a third CA, made with `openssl ca` (which keeps the database that
// `-revoke` and `-gencrl` need), signs one leaf per case, each naming its own CRL
// distribution point path on a small HTTP server (listening before the leaves are
// signed; it counts GETs by path and answers 404 for a path it has nothing for). Each
// case has its own endpoint, so its own client and CRL cache. A revoked leaf is a 502
// (`revoked`) and its origin gets no request; a good leaf is served, and its CRL is
// fetched once for two connections; a 404 passes under `soft_fail` (the default),
// counted in `oxy_tls_revocation_unknown_total`, and is a 502 under `hard_fail`
// (`revocation_unknown`); a CRL from another CA (another name) or from an impostor (the
// CA's name, another key) neither clears a revoked leaf nor revokes a good one; with
// `revocation: off` the CRL is never asked for.
//
// Attacks on both: a caIssuers URL serving an attacker's self-signed root, or an
// attacker's intermediate (a CA, issued by a root not trusted), is refused (what comes
// from a URL an unverified certificate names never becomes a trust anchor); an origin
// that sends its leaf followed by a certificate that did not sign it does not have that
// certificate taken as the issuer: the trusted CA that signed the leaf is, and its CRL
// revokes the leaf.

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, get as httpGet } from "node:http";
import { createSecureServer, type SecureServerOptions } from "node:http2";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Server as TlsServer, TLSSocket } from "node:tls";
import { curl } from "../lib/curl.ts";
import { OxyProcess, until } from "../lib/oxy.ts";
import { assertNothingCounted, assertRefused, caDatabase, LEAF_EXTENSIONS, opensslIn, revocationUnknown, selfSignedCa, verificationFailures } from "../lib/test-ca.ts";

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
  /** Of those, the ones that resumed an earlier session. */
  resumed: number;
  /** Handshakes that failed, by the server's error message. */
  clientErrors: string[];
  close(): Promise<void>;
}

/** A plain HTTP server for caIssuers and CRL URLs: what it has for a GET's path, 404
 * elsewhere. */
interface FileServer {
  host: string;
  port: number;
  /** GETs (any answer) by path. */
  hits: Record<string, number>;
  /** TCP connections accepted. */
  connections: number;
  url(path: string): string;
  close(): Promise<void>;
}

const ALL_CASES = ["sha1", "weak", "expired", "future", "good", "tls11", "resume"] as const;
type Case = (typeof ALL_CASES)[number];
/** What a browser checks beyond the signature: the name (DNS or IP SAN), the extended
 * key usage and an intermediate's name constraints. */
const NAME_CASES = ["wrong_name", "by_ip", "wrong_ip", "client_eku", "constrained"] as const;
type NameCase = (typeof NAME_CASES)[number];
/** The host each name case's endpoint connects to (the others: `localhost`). */
const UPSTREAM_HOST: Partial<Record<NameCase, string>> = { by_ip: "127.0.0.1", wrong_ip: "127.0.0.1" };
/** Origins that send their leaf without its intermediate. */
const AIA_CASES = ["aia", "aia_untrusted", "aia_404", "aia_denied"] as const;
type AiaCase = (typeof AIA_CASES)[number];
/** Leaves from an attacker's root whose caIssuers URL serves that root (self-signed) or
 * the attacker's intermediate; the endpoints trust the AIA root only. */
const AIA_ATTACK_CASES = ["aia_self_signed", "aia_foreign_int"] as const;
type AiaAttackCase = (typeof AIA_ATTACK_CASES)[number];
/** Leaves from the CRL test CA, each naming its own CRL path. */
const CRL_CASES = ["crl_revoked", "crl_good", "crl_404", "crl_404_hard", "crl_forged", "crl_impostor", "crl_off", "crl_unbound"] as const;
type CrlCase = (typeof CRL_CASES)[number];
type Endpoint = Case | NameCase | AiaCase | AiaAttackCase | CrlCase;
type Revocation = "off" | "soft_fail" | "hard_fail";

/** Each CRL case: its leaf's CRL path, whether the CA revoked it, the CRL served at the
 * path (`none`: 404) and the endpoint's `http.client.revocation` (unset: the default). */
const CRL_SETUP: Record<CrlCase, { path: string; revoked: boolean; serves: "ca" | "other" | "impostor" | "none"; revocation?: Revocation; sendsOther?: true }> = {
  crl_revoked: { path: "/revoked.crl", revoked: true, serves: "ca" },
  crl_good: { path: "/good.crl", revoked: false, serves: "ca" },
  crl_404: { path: "/missing.crl", revoked: false, serves: "none" },
  crl_404_hard: { path: "/missing-hard.crl", revoked: false, serves: "none", revocation: "hard_fail" },
  // A revoked leaf whose URL serves another CA's CRL, which lists nothing.
  crl_forged: { path: "/forged.crl", revoked: true, serves: "other", revocation: "hard_fail" },
  // A good leaf whose URL serves a CRL listing it, in the CA's name, signed with another key.
  crl_impostor: { path: "/impostor.crl", revoked: false, serves: "impostor", revocation: "hard_fail" },
  crl_off: { path: "/off.crl", revoked: true, serves: "ca", revocation: "off" },
  // A revoked leaf signed by the CA itself, whose origin sends after it the other CA's
  // certificate (which did not sign it): that certificate's CRL must not count.
  crl_unbound: { path: "/unbound.crl", revoked: true, serves: "ca", revocation: "hard_fail", sendsOther: true },
};

let dir: string;
let ca: string;
let aiaRoot: string;
const leaves = {} as Record<Exclude<Case, "tls11" | "resume">, Leaf>;
const origins = {} as Record<Endpoint, Origin>;
/** The caIssuers URL in each AIA case's leaf. */
const aiaUrls = {} as Record<AiaCase | AiaAttackCase, string>;
/** The attacker's caIssuers server (127.0.0.1, allowed): its root or intermediate, by path. */
let attackerIssuers: FileServer;
/** On 127.0.0.1 (allowed by the egress policy) and 127.0.0.2 (not). */
let issuers: FileServer;
let deniedIssuers: FileServer;
let crlCa: string;
/** The CRL distribution point in each CRL case's leaf. */
const crlUrls = {} as Record<CrlCase, string>;
/** CRL DER by path, filled once the CRLs are made. */
const crlFiles: Record<string, Buffer> = {};
let crls: FileServer;
let oxy: OxyProcess;

function openssl(args: string[]): string {
  return opensslIn(dir)(args);
}

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

/** Issues `name`'s CSR from `issuer` (`issuer.pem`, `issuer.key`) for two days with
 * SHA-256 and the extensions `extensions`. */
function issue(name: string, issuer: string, extensions: string): Leaf {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${issuer}.pem`, "-CAkey", `${issuer}.key`, "-CAcreateserial", "-days", "2", "-sha256", "-out", `${name}.pem`, "-extfile", `${name}.ext`]);
  return { chain: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

/** `name`'s CRL (after `openssl ca -gencrl`), in DER. */
function crlOf(name: string): Buffer {
  openssl(["ca", "-config", `${name}.cnf`, "-gencrl", "-out", `${name}.crl.pem`]);
  openssl(["crl", "-in", `${name}.crl.pem`, "-outform", "DER", "-out", `${name}.crl`]);
  return readFileSync(join(dir, `${name}.crl`));
}

/** An origin that counts what reaches `server`, once it listens on 127.0.0.1 port 0. */
async function track(server: TlsServer, origin: Origin): Promise<Origin> {
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("secureConnection", (socket: TLSSocket) => {
    origin.handshakes += 1;
    if (socket.isSessionReused()) origin.resumed += 1;
  });
  server.on("tlsClientError", (e: Error) => origin.clientErrors.push(e.message));
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  origin.port = (server.address() as AddressInfo).port;
  origin.close = () =>
    new Promise<void>((ok) => {
      server.close(() => ok());
      for (const socket of sockets) socket.destroy();
    });
  return origin;
}

function newOrigin(): Origin {
  return { port: 0, requests: [], handshakes: 0, resumed: 0, clientErrors: [], close: async () => {} };
}

/** Serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on 127.0.0.1 with `leaf`, answering 200. */
async function serve(leaf: Leaf, tls: SecureServerOptions = {}): Promise<Origin> {
  const origin = newOrigin();
  const server = createSecureServer({ allowHTTP1: true, cert: readFileSync(leaf.chain), key: readFileSync(leaf.key), ...tls }, (req, res) => {
    origin.requests.push(`${req.method} ${req.url}`);
    res.on("error", () => {});
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ version: req.httpVersion }));
  });
  server.on("sessionError", () => {});
  return track(server, origin);
}

/** Serves HTTPS/1.1 on 127.0.0.1 with `leaf` alone (no intermediate), answering 200 and
 * closing each connection after its response (so none is reused). */
async function serveLeafOnly(leaf: Leaf): Promise<Origin> {
  const origin = newOrigin();
  const server = createHttpsServer({ cert: readFileSync(leaf.chain), key: readFileSync(leaf.key) }, (req, res) => {
    origin.requests.push(`${req.method} ${req.url}`);
    res.setHeader("content-type", "application/json");
    res.setHeader("connection", "close");
    res.end(JSON.stringify({ version: req.httpVersion }));
  });
  return track(server, origin);
}

/** Serves `der` over plain HTTP on `host` port 0 for paths starting `/int`, 404 elsewhere. */
function serveIssuer(host: string, der: Buffer): Promise<FileServer> {
  return serveFiles(host, "application/pkix-cert", (path) => (path.startsWith("/int") ? der : undefined));
}

/** Serves over plain HTTP on `host` port 0 what `file` gives for a GET's path (as
 * `contentType`), 404 where it gives nothing. */
async function serveFiles(host: string, contentType: string, file: (path: string) => Buffer | undefined): Promise<FileServer> {
  const sockets = new Set<Socket>();
  const issuer: FileServer = {
    host,
    port: 0,
    hits: {},
    connections: 0,
    url: (path) => `http://${host}:${issuer.port}${path}`,
    close: async () => {},
  };
  const server = createHttpServer((req, res) => {
    const path = req.url ?? "";
    issuer.hits[path] = (issuer.hits[path] ?? 0) + 1;
    const body = req.method === "GET" ? file(path) : undefined;
    if (body) {
      res.writeHead(200, { "content-type": contentType });
      res.end(body);
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
    }
  });
  server.on("connection", (socket: Socket) => {
    issuer.connections += 1;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  await new Promise<void>((ok) => server.listen(0, host, ok));
  issuer.port = (server.address() as AddressInfo).port;
  issuer.close = () =>
    new Promise<void>((ok) => {
      server.close(() => ok());
      for (const socket of sockets) socket.destroy();
    });
  return issuer;
}

/** GET `url` directly (not through Oxy): the status. */
function getStatus(url: string): Promise<number> {
  return new Promise((ok, fail) => {
    httpGet(url, { agent: false }, (res) => {
      res.resume();
      res.on("end", () => ok(res.statusCode ?? 0));
    }).on("error", fail);
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "oxy-upstream-pki-"));
  ca = selfSignedCa(dir, "ca", "Oxy Upstream Test CA");
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
  // A connection per request, for session resumption.
  origins.resume = await serveLeafOnly(leaves.good);

  // Names, key usage and name constraints, all from the test CA but the constrained
  // leaf, which an intermediate limited to example.org issued for localhost.
  for (const name of ["wrong-name-leaf", "dns-only-leaf", "client-eku-leaf", "constrained-int", "constrained-leaf"]) request(name);
  const wrongName = issue("wrong-name-leaf", "ca", "subjectAltName=DNS:other.example\nextendedKeyUsage=serverAuth\n");
  const dnsOnly = issue("dns-only-leaf", "ca", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n");
  const clientEku = issue("client-eku-leaf", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=clientAuth\n");
  issue("constrained-int", "ca", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nnameConstraints=critical,permitted;DNS:example.org\n");
  const constrained = issue("constrained-leaf", "constrained-int", LEAF_EXTENSIONS);
  // The fixtures are what they claim, by OpenSSL.
  const verify = (leaf: Leaf, ...args: string[]) => () => openssl(["verify", "-CAfile", "ca.pem", ...args, leaf.chain]);
  assert.throws(verify(wrongName, "-verify_hostname", "localhost"), /hostname mismatch/);
  assert.match(verify(dnsOnly, "-verify_hostname", "localhost")(), /: OK\n/);
  assert.throws(verify(dnsOnly, "-verify_ip", "127.0.0.1"), /IP address mismatch/);
  assert.match(verify(leaves.good, "-verify_ip", "127.0.0.1")(), /: OK\n/);
  assert.throws(verify(clientEku, "-purpose", "sslserver"), /unsuitable certificate purpose/);
  assert.throws(verify(constrained, "-untrusted", "constrained-int.pem"), /permitted subtree violation/);
  origins.wrong_name = await serve(wrongName);
  origins.by_ip = await serve(leaves.good);
  origins.wrong_ip = await serve(dnsOnly);
  origins.client_eku = await serve(clientEku);
  const constrainedChain = Buffer.concat([readFileSync(constrained.chain), readFileSync(join(dir, "constrained-int.pem"))]);
  origins.constrained = await serve(constrained, { cert: constrainedChain });

  // AIA: root → intermediate → one leaf per case. The issuer servers listen before the
  // leaves are signed: their URLs are in the leaves.
  aiaRoot = selfSignedCa(dir, "aia-root", "Oxy AIA Test Root");
  request("aia-int");
  issue("aia-int", "aia-root", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n");
  openssl(["x509", "-in", "aia-int.pem", "-outform", "DER", "-out", "aia-int.der"]);
  const der = readFileSync(join(dir, "aia-int.der"));
  issuers = await serveIssuer("127.0.0.1", der);
  deniedIssuers = await serveIssuer("127.0.0.2", der);
  aiaUrls.aia = issuers.url("/int.der");
  aiaUrls.aia_untrusted = issuers.url("/int-untrusted.der");
  aiaUrls.aia_404 = issuers.url("/missing.der");
  aiaUrls.aia_denied = deniedIssuers.url("/int.der");
  for (const name of AIA_CASES) {
    const leafName = `${name.replace("_", "-")}-leaf`;
    request(leafName);
    const leaf = issue(leafName, "aia-int", `${LEAF_EXTENSIONS}authorityInfoAccess=caIssuers;URI:${aiaUrls[name]}\n`);
    // The leaf names its issuer's URL, verifies with the intermediate and not without it.
    assert.match(openssl(["x509", "-in", leaf.chain, "-noout", "-text"]), new RegExp(`CA Issuers - URI:${aiaUrls[name].replaceAll(".", "\\.")}\n`));
    assert.match(openssl(["verify", "-CAfile", "aia-root.pem", "-untrusted", "aia-int.pem", leaf.chain]), /: OK\n/);
    assert.throws(() => openssl(["verify", "-CAfile", "aia-root.pem", leaf.chain]), /unable to get local issuer certificate/);
    origins[name] = await serveLeafOnly(leaf);
  }

  // AIA attacks: an attacker's self-signed root and an intermediate (a CA) it issued;
  // one leaf from each, naming as its issuer's URL the attacker's root (self-signed: it
  // is not an intermediate) and the attacker's intermediate (it does not chain to the
  // AIA root the endpoints trust).
  selfSignedCa(dir, "evil-root", "Oxy Attacker Root");
  request("evil-int");
  issue("evil-int", "evil-root", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n");
  const derOf = (name: string) => {
    openssl(["x509", "-in", `${name}.pem`, "-outform", "DER", "-out", `${name}.der`]);
    return readFileSync(join(dir, `${name}.der`));
  };
  const attackerFiles: Record<string, Buffer> = { "/root.der": derOf("evil-root"), "/int.der": derOf("evil-int") };
  attackerIssuers = await serveFiles("127.0.0.1", "application/pkix-cert", (path) => attackerFiles[path]);
  aiaUrls.aia_self_signed = attackerIssuers.url("/root.der");
  aiaUrls.aia_foreign_int = attackerIssuers.url("/int.der");
  for (const [name, issuer] of [["aia_self_signed", "evil-root"], ["aia_foreign_int", "evil-int"]] as const) {
    const leafName = `${name.replaceAll("_", "-")}-leaf`;
    request(leafName);
    const leaf = issue(leafName, issuer, `${LEAF_EXTENSIONS}authorityInfoAccess=caIssuers;URI:${aiaUrls[name]}\n`);
    // The leaf names the attacker's URL, verifies against the attacker's root (with the
    // attacker's intermediate) and not against the AIA root, even with what the URL serves.
    assert.match(openssl(["x509", "-in", leaf.chain, "-noout", "-text"]), new RegExp(`CA Issuers - URI:${aiaUrls[name].replaceAll(".", "\\.")}\n`));
    assert.match(openssl(["verify", "-CAfile", "evil-root.pem", "-untrusted", "evil-int.pem", leaf.chain]), /: OK\n/);
    assert.throws(() => openssl(["verify", "-CAfile", "aia-root.pem", "-untrusted", `${issuer}.pem`, leaf.chain]), /verification failed/);
    origins[name] = await serveLeafOnly(leaf);
  }

  // CRLs: the CA issues a leaf per case naming its CRL path on the server, listening
  // first; the impostor has the CA's name and another key, the other CA another name.
  crlCa = selfSignedCa(dir, "crl-ca", "Oxy CRL Test CA");
  selfSignedCa(dir, "crl-impostor", "Oxy CRL Test CA");
  selfSignedCa(dir, "crl-other", "Oxy Other CRL CA");
  for (const name of ["crl-ca", "crl-impostor", "crl-other"]) caDatabase(dir, name);
  crls = await serveFiles("127.0.0.1", "application/pkix-crl", (path) => crlFiles[path]);
  for (const name of CRL_CASES) {
    const leafName = `${name.replaceAll("_", "-")}-leaf`;
    crlUrls[name] = crls.url(CRL_SETUP[name].path);
    request(leafName);
    writeFileSync(join(dir, `${leafName}.ext`), `${LEAF_EXTENSIONS}crlDistributionPoints=URI:${crlUrls[name]}\n`);
    openssl(["ca", "-batch", "-notext", "-config", "crl-ca.cnf", "-extfile", `${leafName}.ext`, "-in", `${leafName}.csr`, "-out", `${leafName}.pem`]);
    assert.match(openssl(["x509", "-in", `${leafName}.pem`, "-noout", "-text"]), new RegExp(`CRL Distribution Points: \\n\\s+Full Name:\\n\\s+URI:${crlUrls[name].replaceAll(".", "\\.")}\n`));
    if (CRL_SETUP[name].revoked) openssl(["ca", "-config", "crl-ca.cnf", "-revoke", `${leafName}.pem`]);
    // The impostor's CRL lists the leaf it claims.
    if (CRL_SETUP[name].serves === "impostor") openssl(["ca", "-config", "crl-impostor.cnf", "-revoke", `${leafName}.pem`]);
  }
  const crlDer = { ca: crlOf("crl-ca"), impostor: crlOf("crl-impostor"), other: crlOf("crl-other") };
  for (const name of CRL_CASES) {
    const { path, revoked, serves } = CRL_SETUP[name];
    if (serves !== "none") crlFiles[path] = crlDer[serves];
    const leafName = `${name.replaceAll("_", "-")}-leaf`;
    const leaf = { chain: join(dir, `${leafName}.pem`), key: join(dir, `${leafName}.key`) };
    // The fixtures are what they claim, by OpenSSL: the CA's CRL lists the revoked
    // leaves only; the impostor's fails its signature.
    const verify = (crl: string) => () => openssl(["verify", "-crl_check", "-CAfile", "crl-ca.pem", "-CRLfile", crl, leaf.chain]);
    if (revoked) assert.throws(verify("crl-ca.crl.pem"), /certificate revoked/);
    else assert.match(verify("crl-ca.crl.pem")(), /: OK\n/);
    if (serves === "impostor") assert.throws(verify("crl-impostor.crl.pem"), /CRL signature failure/);
    // Over HTTP/1.1, a new connection per request, for the good leaf's two requests.
    if (CRL_SETUP[name].sendsOther) {
      // The leaf, then the other CA's certificate, which did not sign it.
      assert.throws(() => openssl(["verify", "-CAfile", "crl-other.pem", "-partial_chain", leaf.chain]), /unable to get local issuer certificate/);
      const cert = Buffer.concat([readFileSync(leaf.chain), readFileSync(join(dir, "crl-other.pem"))]);
      origins[name] = await serve(leaf, { cert });
    } else origins[name] = name === "crl_good" ? await serveLeafOnly(leaf) : await serve(leaf);
  }

  oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      // 127.0.0.1 only: the issuer server on 127.0.0.2 is loopback but not allowed.
      egress: { allow: ["127.0.0.1/32"] },
      endpoints: [...ALL_CASES, ...NAME_CASES, ...AIA_CASES, ...AIA_ATTACK_CASES, ...CRL_CASES].map((name) => ({
        name,
        listen: ["127.0.0.1:0"],
        http: {
          upstream: `https://${UPSTREAM_HOST[name as NameCase] ?? "localhost"}:${origins[name].port}`,
          client: clientFor(name),
        },
      })),
    },
  });
});

/** `http.client` for endpoint `name`: the AIA cases trust the AIA root, except
 * `aia_untrusted` (the unrelated test CA; the attack cases trust the AIA root too); the CRL cases the CRL CA, with their
 * `revocation` where set. */
function clientFor(name: Endpoint): object {
  if (name in CRL_SETUP) {
    const { revocation } = CRL_SETUP[name as CrlCase];
    return { ca_file: crlCa, ...(revocation ? { revocation } : {}) };
  }
  return { ca_file: name.startsWith("aia") && name !== "aia_untrusted" ? aiaRoot : ca };
}

after(async () => {
  await Promise.all([...Object.values(origins), issuers, deniedIssuers, attackerIssuers, crls].filter((s) => s).map((s) => s.close()));
});

const failures = verificationFailures;

/** GET / through endpoint `name` (connecting to `host`); asserts a 502 whose body is the
 * certificate refusal `reason` counted under `label` (and under no other), and that the
 * origin got no request. */
async function refused(name: Endpoint, label: string, reason: string, host = "localhost"): Promise<void> {
  const origin = origins[name];
  await assertRefused(oxy, name, origin.port, label, reason, host);
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

test("a new connection to the same upstream resumes a TLS session (one full handshake for three connections)", async () => {
  for (const path of ["/one", "/two", "/three"]) await served("resume", path, "1.1");
  const origin = origins.resume;
  assert.deepEqual(origin.requests, ["GET /one", "GET /two", "GET /three"]);
  assert.equal(origin.handshakes, 3, "a connection per request (the origin closes them)");
  assert.equal(origin.resumed, 2, "the second and third resumed a session");
  await nothingCounted("resume");
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

test("a leaf for another name is refused: hostname_mismatch", async () => {
  await refused("wrong_name", "hostname_mismatch", "Hostname mismatch");
});

test("an upstream addressed by IP is matched against the leaf's IP SANs: served with one, refused without (hostname_mismatch)", async () => {
  await served("by_ip", "/ip", "2.0");
  assert.deepEqual(origins.by_ip.requests, ["GET /ip"]);
  await nothingCounted("by_ip");
  await refused("wrong_ip", "hostname_mismatch", "IP address mismatch", "127.0.0.1");
});

test("a leaf for client authentication only is refused: key_usage", async () => {
  await refused("client_eku", "key_usage", "unsupported certificate purpose");
});

test("a leaf outside its intermediate's name constraints is refused: name_constraints", async () => {
  await refused("constrained", "name_constraints", "permitted subtree violation");
});

test("an origin that speaks only TLS 1.1 fails the handshake: upstream_tls", async () => {
  const res = await curl([`${oxy.url("tls11")}/`]);
  assert.equal(res.status, 502, `${res.stderr}\n${oxy.logs()}`);
  assert.match(res.body, /^TLS with the upstream failed: /);
  await oxy.waitForMetric('oxy_http_errors_total{endpoint="tls11",reason="upstream_tls"}', 1);
  const origin = origins.tls11;
  // The origin saw a ClientHello offering nothing below TLS 1.2.
  await until(() => (origin.clientErrors.length > 0 ? true : undefined), "the TLS 1.1 origin's handshake error");
  assert.match(origin.clientErrors[0], /unsupported protocol/);
  assert.equal(origin.handshakes, 0);
  assert.deepEqual(origin.requests, []);
  const metrics = (await oxy.telemetry("/metrics")).body;
  assert.doesNotMatch(metrics, /^oxy_tls_upstream_verification_failures_total\{endpoint="tls11"/m, "not a certificate refusal");
});

test("AIA: a leaf sent without its intermediate is completed from its caIssuers URL, fetched once for two connections", async () => {
  for (const path of ["/one", "/two"]) {
    const res = await curl([`${oxy.url("aia")}${path}`]);
    assert.equal(res.status, 200, `${res.stderr}\n${oxy.logs()}`);
    assert.deepEqual(JSON.parse(res.body), { version: "1.1" });
  }
  const origin = origins.aia;
  assert.deepEqual(origin.requests, ["GET /one", "GET /two"]);
  // Each request was a new connection (the origin closes them). The first began with a
  // handshake refused for the missing issuer, then one with the intermediate; the second
  // had the intermediate at once (its alert would have come before its request).
  assert.equal(origin.handshakes, 2, "one verified handshake per request");
  await until(() => (origin.clientErrors.length >= 1 ? true : undefined), "the handshake abandoned for the missing issuer");
  assert.equal(origin.clientErrors.length, 1, `only the first connection lacked the issuer (${origin.clientErrors})`);
  assert.match(origin.clientErrors[0], /alert unknown ca/);
  // The second request used the intermediate kept from the first.
  assert.equal(issuers.hits["/int.der"], 1, `one GET for the intermediate (${JSON.stringify(issuers.hits)})`);
  const metrics = (await oxy.telemetry("/metrics")).body;
  assert.doesNotMatch(metrics, /^oxy_tls_upstream_verification_failures_total\{endpoint="aia"/m);
  assert.doesNotMatch(metrics, /^oxy_http_errors_total\{endpoint="aia"/m);
});

test("AIA: a fetched intermediate is no trust anchor: its root must be trusted (unknown_issuer)", async () => {
  // The fetched intermediate itself must verify against the trusted roots before it is used.
  const url = aiaUrls.aia_untrusted;
  await refused("aia_untrusted", "unknown_issuer", `its issuer could not be fetched from ${url}: it does not chain to a trusted root`);
  // It was fetched: the refusal is about what came back, not the fetch.
  assert.equal(issuers.hits["/int-untrusted.der"], 1, JSON.stringify(issuers.hits));
});

test("AIA: a caIssuers URL answering 404 is a 502 saying so (unknown_issuer)", async () => {
  const url = aiaUrls.aia_404;
  await refused("aia_404", "unknown_issuer", `its issuer could not be fetched from ${url}: it answered 404 Not Found`);
  assert.equal(issuers.hits["/missing.der"], 1, JSON.stringify(issuers.hits));
});

test("AIA: a caIssuers URL the egress policy refuses is never connected to (unknown_issuer)", async () => {
  const url = aiaUrls.aia_denied;
  await refused("aia_denied", "unknown_issuer", `its issuer could not be fetched from ${url}: egress denied: 127.0.0.2 is a loopback address; egress.allow does not cover it`);
  assert.equal(deniedIssuers.connections, 0, "no connection to the refused issuer server");
  assert.deepEqual(deniedIssuers.hits, {});
  // The server was there to be reached: a direct GET is answered and counted.
  assert.equal(await getStatus(url), 200);
  assert.equal(deniedIssuers.connections, 1);
});

/** GET `path` through endpoint `name`: asserts a 200 from the origin over `version`. */
async function served(name: Endpoint, path: string, version: "1.1" | "2.0"): Promise<void> {
  const res = await curl([`${oxy.url(name)}${path}`]);
  assert.equal(res.status, 200, `${res.stderr}\n${oxy.logs()}`);
  assert.deepEqual(JSON.parse(res.body), { version }, res.body);
}

const nothingCounted = (name: Endpoint, unknown = false) => assertNothingCounted(oxy, name, unknown);

test("CRL: a leaf its CA's CRL lists is refused after the handshake: revoked", async () => {
  await refused("crl_revoked", "revoked", "the certificate is revoked (its issuer's CRL lists it)");
  const origin = origins.crl_revoked;
  await until(() => (origin.handshakes === 1 ? true : undefined), () => `one handshake with the revoked origin (${origin.handshakes}, ${origin.clientErrors})`);
  assert.equal(crls.hits["/revoked.crl"], 1, JSON.stringify(crls.hits));
  assert.equal(await oxy.metric(revocationUnknown("crl_revoked")), undefined, "its status was known");
});

test("CRL: a good leaf from the same CA is served; its CRL is fetched once for two connections", async () => {
  await served("crl_good", "/one", "1.1");
  await served("crl_good", "/two", "1.1");
  const origin = origins.crl_good;
  assert.deepEqual(origin.requests, ["GET /one", "GET /two"]);
  assert.equal(origin.handshakes, 2, "a connection per request (the origin closes them)");
  assert.equal(crls.hits["/good.crl"], 1, `one GET for the CRL, kept until its nextUpdate (${JSON.stringify(crls.hits)})`);
  await nothingCounted("crl_good");
});

test("CRL: a CRL URL answering 404 passes under soft_fail (the default), counted", async () => {
  await served("crl_404", "/", "2.0");
  assert.deepEqual(origins.crl_404.requests, ["GET /"]);
  await oxy.waitForMetric(revocationUnknown("crl_404"), 1);
  assert.equal(crls.hits["/missing.crl"], 1, JSON.stringify(crls.hits));
  await nothingCounted("crl_404", true);
});

test("CRL: a CRL URL answering 404 is refused under hard_fail: revocation_unknown", async () => {
  const url = crlUrls.crl_404_hard;
  await refused("crl_404_hard", "revocation_unknown", `its revocation status is unknown: the CRL at ${url}: it answered 404 Not Found`);
  assert.equal(crls.hits["/missing-hard.crl"], 1, JSON.stringify(crls.hits));
  assert.equal(await oxy.metric(revocationUnknown("crl_404_hard")), undefined, "refused, not passed");
});

test("CRL: another CA's CRL does not clear a revoked leaf (hard_fail: revocation_unknown)", async () => {
  const url = crlUrls.crl_forged;
  await refused("crl_forged", "revocation_unknown", `its revocation status is unknown: the CRL at ${url}: the CRL is not its issuer's`);
  assert.equal(crls.hits["/forged.crl"], 1, JSON.stringify(crls.hits));
});

test("CRL: a CRL in the CA's name signed with another key does not revoke a good leaf (hard_fail: revocation_unknown)", async () => {
  const url = crlUrls.crl_impostor;
  await refused("crl_impostor", "revocation_unknown", `its revocation status is unknown: the CRL at ${url}: the CRL's signature does not verify`);
  assert.equal(crls.hits["/impostor.crl"], 1, JSON.stringify(crls.hits));
});

test("CRL: with revocation off a revoked leaf is served and its CRL never asked for", async () => {
  await served("crl_off", "/", "2.0");
  assert.deepEqual(origins.crl_off.requests, ["GET /"]);
  assert.equal(crls.hits["/off.crl"], undefined, JSON.stringify(crls.hits));
  await nothingCounted("crl_off");
  // The CRL was there to be fetched: a direct GET is answered (and counted).
  assert.equal(await getStatus(crlUrls.crl_off), 200);
  assert.equal(crls.hits["/off.crl"], 1);
});

test("AIA attack: a caIssuers URL serving the attacker's self-signed root is refused (unknown_issuer)", async () => {
  const url = aiaUrls.aia_self_signed;
  await refused("aia_self_signed", "unknown_issuer", `its issuer could not be fetched from ${url}: it is self-signed, not an intermediate`);
  assert.equal(attackerIssuers.hits["/root.der"], 1, JSON.stringify(attackerIssuers.hits));
});

test("AIA attack: a caIssuers URL serving the attacker's intermediate (issued by a root not trusted) is refused (unknown_issuer)", async () => {
  const url = aiaUrls.aia_foreign_int;
  await refused("aia_foreign_int", "unknown_issuer", `its issuer could not be fetched from ${url}: it does not chain to a trusted root`);
  assert.equal(attackerIssuers.hits["/int.der"], 1, JSON.stringify(attackerIssuers.hits));
});

test("CRL: a certificate sent after the leaf that did not sign it is not taken as its issuer: the trusted CA that did is (revoked)", async () => {
  await refused("crl_unbound", "revoked", "the certificate is revoked (its issuer's CRL lists it)");
  // The CRL verified against the CA that signed the leaf (found among the trusted
  // roots); checked against the certificate sent after the leaf it would have failed
  // ("not its issuer's") and left the status unknown.
  assert.equal(crls.hits["/unbound.crl"], 1, JSON.stringify(crls.hits));
  assert.equal(await oxy.metric(revocationUnknown("crl_unbound")), undefined, "its status was known");
});

test("Oxy exits cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
});
