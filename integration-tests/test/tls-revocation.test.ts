// Revocation of an upstream's certificates by Oxy's upstream TLS client
// (`http.client.revocation`, `http.client.crl_files`): stapled OCSP responses, CRL files
// read at start, and an intermediate's CRL distribution point. One Oxy process, one
// reverse-proxy endpoint per case, each with its own HTTPS origin (HTTP/1.1, closing each
// connection after its response, so every request is a new handshake) and its own
// client (so its own CRL cache). A refusal is a 502 naming the reason, counted under
// `oxy_tls_upstream_verification_failures_total{reason}` and never sent to the origin.
// The PKI is made with the openssl CLI, each fixture checked by openssl to be what it
// claims.
//
// OCSP stapling: a CA made with `openssl ca` (whose database `openssl ocsp -index`
// answers from) issues one leaf per case, none naming a CRL distribution point (except
// the `ocsp_good` leaf, whose CRL URL answers 404), and the origin staples a response
// made with `openssl ocsp` whenever the client asks (the `OCSPRequest` event, counted).
// A staple saying revoked is a 502 (`revoked`, even under the default soft_fail); one
// saying good decides under hard_fail without the CRL URL being asked; one signed by a
// delegated responder the CA issued for OCSP signing is good. Under hard_fail, a staple
// saying "good" signed by a certificate of the CA without the OCSP signing usage, or by
// an impostor CA (the CA's name, another key), is a 502 (`revocation_unknown`), and so is
// the good staple of another leaf; a staple saying "unknown" passes under soft_fail,
// counted in `oxy_tls_revocation_unknown_total`. With `revocation: off` a leaf whose
// staple says revoked is served and the origin is never asked for a staple.
//
// CRL files: the CA's CRL (PEM) in `crl_files` revokes the leaf it lists (a 502 naming
// the file) and clears one it does not (hard_fail, no staple; that leaf's CRL URL
// answers 404 and is never asked: the file decided). Another CA's CRL (PEM) and an
// impostor's (the CA's name, another key; DER), both listing a leaf's serial, do not
// revoke it (nothing else names a way to check it: good).
//
// Intermediates: a root issues two intermediates naming the root's CRL as their
// distribution point; the root revokes one. The origins send leaf and intermediate; the
// leaf under the revoked one is a 502 naming the intermediate, the one under the other
// is served, with the root's CRL fetched once per endpoint (kept for the next
// connection).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Server, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { curl } from "../lib/curl.ts";
import { endpointSettingsErrors, OxyProcess, until } from "../lib/oxy.ts";
import { assertNothingCounted, assertRefused, caDatabase, LEAF_EXTENSIONS, opensslIn, revocationUnknown, selfSignedCa as testCa } from "../lib/test-ca.ts";

type Revocation = "off" | "soft_fail" | "hard_fail";

/** An HTTPS origin that counts what reaches it. */
interface Origin {
  port: number;
  /** `METHOD path` of every request whose head arrived. */
  requests: string[];
  /** TLS handshakes completed. */
  handshakes: number;
  /** Times a client asked for a stapled OCSP response. */
  ocspRequests: number;
  close(): Promise<void>;
}

/** Each OCSP case: the leaf its origin serves, the staple it sends (an OCSP response
 * file) and the endpoint's `revocation` (unset: the default, soft_fail). */
const OCSP_SETUP = {
  ocsp_revoked: { leaf: "ocsp-revoked", staple: "ocsp-revoked.ocsp" },
  ocsp_good: { leaf: "ocsp-good", staple: "ocsp-good.ocsp", revocation: "hard_fail" },
  ocsp_delegated: { leaf: "ocsp-delegated", staple: "ocsp-delegated.ocsp", revocation: "hard_fail" },
  ocsp_unauthorised: { leaf: "ocsp-unauthorised", staple: "ocsp-unauthorised.ocsp", revocation: "hard_fail" },
  ocsp_impostor: { leaf: "ocsp-impostor", staple: "ocsp-impostor.ocsp", revocation: "hard_fail" },
  // The good staple of the ocsp_good leaf, sent for another leaf of the same CA.
  ocsp_other_cert: { leaf: "ocsp-other-cert", staple: "ocsp-good.ocsp", revocation: "hard_fail" },
  ocsp_unknown: { leaf: "ocsp-unknown", staple: "ocsp-unknown.ocsp" },
  // The revoked leaf and its staple.
  ocsp_off: { leaf: "ocsp-revoked", staple: "ocsp-revoked.ocsp", revocation: "off" },
} satisfies Record<string, { leaf: string; staple: string; revocation?: Revocation }>;
type OcspCase = keyof typeof OCSP_SETUP;
const CRL_FILE_CASES = ["crl_file_revoked", "crl_file_good", "crl_file_other_ca"] as const;
type CrlFileCase = (typeof CRL_FILE_CASES)[number];
const INT_CASES = ["int_revoked", "int_good"] as const;
type IntCase = (typeof INT_CASES)[number];
type Endpoint = OcspCase | CrlFileCase | IntCase;

let dir: string;
const origins = {} as Record<Endpoint, Origin>;
/** `http.client` per endpoint. */
const clients = {} as Record<Endpoint, object>;
/** The plain HTTP server for CRL distribution points: GETs counted by path. */
let crls: { port: number; hits: Record<string, number>; close(): Promise<void> };
let crlFile: string;
let oxy: OxyProcess;

function openssl(args: string[]): string {
  return opensslIn(dir)(args);
}
const CA_EXTENSIONS = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n";

/** A CSR and EC P-256 key for `CN=cn`: `name.csr`, `name.key`. */
function request(name: string, cn = name): void {
  openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`]);
}

/** A self-signed CA `name.pem`, `name.key` for `CN=cn`, with an `openssl ca` setup. */
function selfSignedCa(name: string, cn: string): string {
  const path = testCa(dir, name, cn);
  caDatabase(dir, name);
  return path;
}

/** Issues `name` (a new key, `CN=cn`) with `openssl ca` from `ca`, so that the CA's
 * database lists it, with `extensions`. */
function caIssue(ca: string, name: string, extensions: string, cn = name): void {
  request(name, cn);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(["ca", "-batch", "-notext", "-config", `${ca}.cnf`, "-extfile", `${name}.ext`, "-in", `${name}.csr`, "-out", `${name}.pem`]);
}

/** Issues `name` (a new key, `CN=cn`) with `openssl x509 -req` from `issuer`: in no
 * `openssl ca` database. */
function x509Issue(issuer: string, name: string, extensions: string, cn = name): void {
  request(name, cn);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${issuer}.pem`, "-CAkey", `${issuer}.key`, "-CAcreateserial", "-days", "2", "-sha256", "-out", `${name}.pem`, "-extfile", `${name}.ext`]);
}

/** `ca`'s CRL now (`openssl ca -gencrl`): `ca.crl.pem`, and `ca.crl` in DER. */
function gencrl(ca: string): void {
  openssl(["ca", "-config", `${ca}.cnf`, "-gencrl", "-out", `${ca}.crl.pem`]);
  openssl(["crl", "-in", `${ca}.crl.pem`, "-outform", "DER", "-out", `${ca}.crl`]);
}

/** The OCSP response `out` for `leaf` (issued by `ca`), answered from `ca`'s database and
 * signed by `signer`. */
function ocspResponse(ca: string, leaf: string, signer: string, out: string): void {
  openssl(["ocsp", "-issuer", `${ca}.pem`, "-cert", `${leaf}.pem`, "-reqout", `${out}.req`, "-no_nonce"]);
  openssl(["ocsp", "-index", `${ca}-index.txt`, "-CA", `${ca}.pem`, "-rsigner", `${signer}.pem`, "-rkey", `${signer}.key`, "-reqin", `${out}.req`, "-respout", out, "-ndays", "1"]);
}

/** What openssl says of the OCSP response `file` for `leaf` (issued by `ca`), verifying
 * its signature with `ca` as the trust anchor: stdout and stderr together. */
function ocspVerdict(file: string, ca: string, leaf: string): string {
  const args = ["ocsp", "-respin", file, "-issuer", `${ca}.pem`, "-cert", `${leaf}.pem`, "-CAfile", `${ca}.pem`];
  const run = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
  return `${run.stdout}${run.stderr}`;
}

/** `name`'s serial number, in hex as openssl prints it. */
const serialOf = (name: string) => openssl(["x509", "-in", `${name}.pem`, "-noout", "-serial"]).trim().replace(/^serial=/, "");

/** Listens with `server` on 127.0.0.1 port 0; `close` closes it and whatever connections
 * it still has. */
async function listen(server: Server): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const close = () =>
    new Promise<void>((ok) => {
      server.close(() => ok());
      for (const socket of sockets) socket.destroy();
    });
  return { port: (server.address() as AddressInfo).port, close };
}

/** Serves HTTPS/1.1 on 127.0.0.1 with the certificates `chain` (leaf first) and `key`,
 * answering 200 and closing each connection after its response; staples `staple` when
 * asked for one. */
async function serve(chain: string[], key: string, staple?: string): Promise<Origin> {
  const cert = Buffer.concat(chain.map((name) => readFileSync(join(dir, `${name}.pem`))));
  const server = createHttpsServer({ cert, key: readFileSync(join(dir, `${key}.key`)) }, (req, res) => {
    origin.requests.push(`${req.method} ${req.url}`);
    res.setHeader("content-type", "application/json");
    res.setHeader("connection", "close");
    res.end(JSON.stringify({ version: req.httpVersion }));
  });
  const origin: Origin = { port: 0, requests: [], handshakes: 0, ocspRequests: 0, close: async () => {} };
  server.on("secureConnection", () => (origin.handshakes += 1));
  server.on("tlsClientError", () => {});
  if (staple) {
    const response = readFileSync(join(dir, staple));
    server.on("OCSPRequest", (_cert: Buffer, _issuer: Buffer, reply: (err: Error | null, resp: Buffer) => void) => {
      origin.ocspRequests += 1;
      reply(null, response);
    });
  }
  Object.assign(origin, await listen(server));
  return origin;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "oxy-revocation-pki-"));
  const files: Record<string, Buffer> = {};
  const server = createHttpServer((req, res) => {
    const path = req.url ?? "";
    crls.hits[path] = (crls.hits[path] ?? 0) + 1;
    const body = req.method === "GET" ? files[path] : undefined;
    res.writeHead(body ? 200 : 404, { "content-type": body ? "application/pkix-crl" : "text/plain" });
    res.end(body ?? "not found\n");
  });
  crls = { hits: {}, ...(await listen(server)) };
  const crlUrl = (path: string) => `http://127.0.0.1:${crls.port}${path}`;

  // OCSP and CRL files: one CA, its leaves issued with `openssl ca`.
  const ca = selfSignedCa("ocsp-ca", "Oxy OCSP Test CA");
  for (const name of ["ocsp-revoked", "ocsp-delegated", "ocsp-unauthorised", "ocsp-impostor", "ocsp-other-cert", "crl-file-revoked", "crl-file-other-ca"]) {
    caIssue("ocsp-ca", name, LEAF_EXTENSIONS);
  }
  // Their CRL URLs answer 404: under hard_fail, only the staple (or the CRL file) can
  // clear them.
  for (const name of ["ocsp-good", "crl-file-good"]) {
    caIssue("ocsp-ca", name, `${LEAF_EXTENSIONS}crlDistributionPoints=URI:${crlUrl(`/${name}.crl`)}\n`);
    assert.match(openssl(["x509", "-in", `${name}.pem`, "-noout", "-text"]), new RegExp(`CRL Distribution Points: \\n\\s+Full Name:\\n\\s+URI:http://127\\.0\\.0\\.1:\\d+/${name}\\.crl\n`));
  }
  // Not in the CA's database: its responder does not know it.
  x509Issue("ocsp-ca", "ocsp-unknown", LEAF_EXTENSIONS);
  openssl(["ca", "-config", "ocsp-ca.cnf", "-revoke", "ocsp-revoked.pem"]);
  openssl(["ca", "-config", "ocsp-ca.cnf", "-revoke", "crl-file-revoked.pem"]);

  // Signers: a delegated responder (OCSP signing), a server certificate of the same CA
  // (not a responder), and an impostor CA (the CA's name, another key).
  x509Issue("ocsp-ca", "ocsp-responder", "keyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n", "Oxy OCSP Responder");
  x509Issue("ocsp-ca", "ocsp-server-cert", "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n", "Oxy Server Certificate");
  selfSignedCa("impostor-ca", "Oxy OCSP Test CA");
  for (const [leaf, signer] of [
    ["ocsp-revoked", "ocsp-ca"],
    ["ocsp-good", "ocsp-ca"],
    ["ocsp-delegated", "ocsp-responder"],
    ["ocsp-unauthorised", "ocsp-server-cert"],
    ["ocsp-impostor", "impostor-ca"],
    ["ocsp-unknown", "ocsp-ca"],
  ]) {
    ocspResponse("ocsp-ca", leaf, signer, `${leaf}.ocsp`);
  }

  // The staples are what they claim, by openssl: the CertID is the leaf's and the
  // status as said; the signature verifies with the CA (itself or through the
  // delegated responder) except the unauthorised signer's and the impostor's.
  const verdict = (file: string, leaf: string) => ocspVerdict(file, "ocsp-ca", leaf);
  assert.match(verdict("ocsp-revoked.ocsp", "ocsp-revoked"), /^ocsp-revoked\.pem: revoked$[\s\S]*^Response verify OK$/m);
  assert.match(verdict("ocsp-good.ocsp", "ocsp-good"), /^ocsp-good\.pem: good$[\s\S]*^Response verify OK$/m);
  assert.match(verdict("ocsp-delegated.ocsp", "ocsp-delegated"), /^ocsp-delegated\.pem: good$[\s\S]*^Response verify OK$/m);
  assert.match(openssl(["ocsp", "-respin", "ocsp-delegated.ocsp", "-resp_text", "-noverify"]), /Responder Id: CN = Oxy OCSP Responder[\s\S]*Subject: CN ?= ?Oxy OCSP Responder/, "signed by the responder, which it carries");
  assert.match(verdict("ocsp-unauthorised.ocsp", "ocsp-unauthorised"), /^ocsp-unauthorised\.pem: good$[\s\S]*^Response Verify Failure$[\s\S]*missing ocspsigning usage/m);
  assert.match(verdict("ocsp-impostor.ocsp", "ocsp-impostor"), /^ocsp-impostor\.pem: good$[\s\S]*^Response Verify Failure$[\s\S]*signature failure/m);
  assert.match(verdict("ocsp-unknown.ocsp", "ocsp-unknown"), /^ocsp-unknown\.pem: unknown$[\s\S]*^Response verify OK$/m);
  assert.match(verdict("ocsp-good.ocsp", "ocsp-other-cert"), /^ocsp-other-cert\.pem: ERROR: No Status found\.$/m, "the good staple is not about the other leaf");
  for (const name of ["ocsp-revoked", "ocsp-delegated", "ocsp-unauthorised", "ocsp-impostor", "ocsp-other-cert", "ocsp-unknown", "crl-file-revoked", "crl-file-other-ca"]) {
    assert.doesNotMatch(openssl(["x509", "-in", `${name}.pem`, "-noout", "-text"]), /CRL Distribution Points/, `${name} names no CRL`);
  }

  // CRL files: the CA's lists the revoked leaf only; another CA's and the impostor's
  // list the crl_file_other_ca leaf's serial.
  selfSignedCa("crl-other", "Oxy Other CRL CA");
  openssl(["ca", "-config", "crl-other.cnf", "-revoke", "crl-file-other-ca.pem"]);
  openssl(["ca", "-config", "impostor-ca.cnf", "-revoke", "crl-file-other-ca.pem"]);
  for (const name of ["ocsp-ca", "crl-other", "impostor-ca"]) gencrl(name);
  crlFile = join(dir, "ocsp-ca.crl.pem");
  const crlCheck = (crl: string, leaf: string) => () => openssl(["verify", "-crl_check", "-CAfile", "ocsp-ca.pem", "-CRLfile", crl, `${leaf}.pem`]);
  assert.throws(crlCheck("ocsp-ca.crl.pem", "crl-file-revoked"), /certificate revoked/);
  assert.match(crlCheck("ocsp-ca.crl.pem", "crl-file-good")(), /: OK\n/);
  assert.match(crlCheck("ocsp-ca.crl.pem", "crl-file-other-ca")(), /: OK\n/);
  assert.throws(crlCheck("impostor-ca.crl.pem", "crl-file-other-ca"), /CRL signature failure/);
  const serial = serialOf("crl-file-other-ca");
  for (const crl of ["crl-other.crl.pem", "impostor-ca.crl.pem"]) {
    assert.match(openssl(["crl", "-in", crl, "-noout", "-text"]), new RegExp(`Serial Number: ${serial}\n`), `${crl} lists the leaf's serial`);
  }

  // Intermediates: a root, two intermediates naming the root's CRL, one revoked; a leaf
  // under each (no CRL of its own).
  const root = selfSignedCa("int-root", "Oxy Revocation Test Root");
  const rootCrl = crlUrl("/root.crl");
  for (const [name, cn] of [["int-revoked", "Oxy Revoked Intermediate"], ["int-good", "Oxy Good Intermediate"]]) {
    caIssue("int-root", name, `${CA_EXTENSIONS}crlDistributionPoints=URI:${rootCrl}\n`, cn);
    assert.match(openssl(["x509", "-in", `${name}.pem`, "-noout", "-text"]), new RegExp(`CRL Distribution Points: \\n\\s+Full Name:\\n\\s+URI:${rootCrl.replaceAll(".", "\\.")}\n`));
    x509Issue(name, `${name}-leaf`, LEAF_EXTENSIONS);
    assert.match(openssl(["verify", "-CAfile", "int-root.pem", "-untrusted", `${name}.pem`, `${name}-leaf.pem`]), /: OK\n/);
  }
  openssl(["ca", "-config", "int-root.cnf", "-revoke", "int-revoked.pem"]);
  gencrl("int-root");
  files["/root.crl"] = readFileSync(join(dir, "int-root.crl"));
  const rootCheck = (int: string) => () => openssl(["verify", "-crl_check", "-CAfile", "int-root.pem", "-CRLfile", "int-root.crl.pem", `${int}.pem`]);
  assert.throws(rootCheck("int-revoked"), /certificate revoked/);
  assert.match(rootCheck("int-good")(), /: OK\n/);

  for (const [name, setup] of Object.entries(OCSP_SETUP) as [OcspCase, (typeof OCSP_SETUP)[OcspCase]][]) {
    origins[name] = await serve([setup.leaf], setup.leaf, setup.staple);
    clients[name] = { ca_file: ca, ...("revocation" in setup ? { revocation: setup.revocation } : {}) };
  }
  const crlFiles: Record<CrlFileCase, string[]> = {
    crl_file_revoked: [crlFile],
    crl_file_good: [crlFile],
    crl_file_other_ca: [join(dir, "crl-other.crl.pem"), join(dir, "impostor-ca.crl")],
  };
  for (const name of CRL_FILE_CASES) {
    const leaf = name.replaceAll("_", "-");
    origins[name] = await serve([leaf], leaf);
    clients[name] = { ca_file: ca, revocation: "hard_fail", crl_files: crlFiles[name] };
  }
  for (const name of INT_CASES) {
    const int = name.replaceAll("_", "-");
    origins[name] = await serve([`${int}-leaf`, int], `${int}-leaf`);
    clients[name] = { ca_file: root, revocation: "hard_fail" };
  }

  oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      egress: { allow: ["127.0.0.1/32"] },
      endpoints: (Object.keys(origins) as Endpoint[]).map((name) => ({
        name,
        listen: ["127.0.0.1:0"],
        http: { upstream: `https://localhost:${origins[name].port}`, client: clients[name] },
      })),
    },
  });
});

after(async () => {
  await Promise.all([...Object.values(origins), crls].filter((s) => s).map((s) => s.close()));
});

/** GET / through endpoint `name`; asserts a 502 whose body is the certificate refusal
 * `reason` counted under `label` (and under no other), after a completed handshake, and
 * that the origin got no request. */
async function refused(name: Endpoint, label: string, reason: string): Promise<void> {
  const origin = origins[name];
  await assertRefused(oxy, name, origin.port, label, reason);
  // The chain verified: the handshake completed, and then nothing was sent.
  await until(() => (origin.handshakes === 1 ? true : undefined), () => `one handshake with the ${name} origin (${origin.handshakes})`);
  assert.deepEqual(origin.requests, [], "the origin received no request");
}

/** GET `path` through endpoint `name`: asserts a 200 from the origin. */
async function served(name: Endpoint, path = "/"): Promise<void> {
  const res = await curl([`${oxy.url(name)}${path}`]);
  assert.equal(res.status, 200, `${res.stderr}\n${oxy.logs()}`);
  assert.deepEqual(JSON.parse(res.body), { version: "1.1" });
}

const nothingCounted = (name: Endpoint, unknown = false) => assertNothingCounted(oxy, name, unknown);

/** Asserts that Oxy asked `name`'s origin for a staple on every handshake. */
function askedForStaples(name: OcspCase): void {
  const origin = origins[name];
  assert.ok(origin.ocspRequests >= 1, `${name}: no staple asked for`);
  assert.equal(origin.ocspRequests, origin.handshakes, `${name}: a staple asked for on every handshake`);
}

test("OCSP: a leaf whose stapled response says revoked is refused (the default, soft_fail): revoked", async () => {
  await refused("ocsp_revoked", "revoked", "the certificate is revoked (its stapled OCSP response says so)");
  askedForStaples("ocsp_revoked");
  assert.equal(await oxy.metric(revocationUnknown("ocsp_revoked")), undefined, "its status was known");
});

test("OCSP: a good staple decides under hard_fail: the leaf's CRL URL (404) is never asked", async () => {
  await served("ocsp_good");
  assert.deepEqual(origins.ocsp_good.requests, ["GET /"]);
  askedForStaples("ocsp_good");
  assert.equal(crls.hits["/ocsp-good.crl"], undefined, JSON.stringify(crls.hits));
  await nothingCounted("ocsp_good");
});

test("OCSP: a staple signed by a delegated responder the CA issued for OCSP signing is good (hard_fail)", async () => {
  await served("ocsp_delegated");
  assert.deepEqual(origins.ocsp_delegated.requests, ["GET /"]);
  askedForStaples("ocsp_delegated");
  await nothingCounted("ocsp_delegated");
});

test("OCSP: a staple saying good, signed by a certificate of the CA without OCSP signing, is refused (hard_fail: revocation_unknown)", async () => {
  await refused("ocsp_unauthorised", "revocation_unknown", "its revocation status is unknown: the stapled OCSP response: its signature is neither the issuer's nor an authorised responder's");
  askedForStaples("ocsp_unauthorised");
});

test("OCSP: a staple saying good, signed by an impostor CA (the CA's name, another key), is refused (hard_fail: revocation_unknown)", async () => {
  await refused("ocsp_impostor", "revocation_unknown", "its revocation status is unknown: the stapled OCSP response: its signature is neither the issuer's nor an authorised responder's");
  askedForStaples("ocsp_impostor");
});

test("OCSP: another leaf's good staple is refused (hard_fail: revocation_unknown)", async () => {
  await refused("ocsp_other_cert", "revocation_unknown", "its revocation status is unknown: the stapled OCSP response: it is about another certificate");
  askedForStaples("ocsp_other_cert");
});

test("OCSP: a staple saying unknown passes under soft_fail (the default), counted", async () => {
  await served("ocsp_unknown");
  assert.deepEqual(origins.ocsp_unknown.requests, ["GET /"]);
  askedForStaples("ocsp_unknown");
  await oxy.waitForMetric(revocationUnknown("ocsp_unknown"), 1);
  await nothingCounted("ocsp_unknown", true);
  // Why it passed is logged.
  await oxy.waitForLog(/passed \(soft_fail\).*the stapled OCSP response: the OCSP responder does not know it/);
});

test("OCSP: with revocation off a leaf whose staple says revoked is served, and no staple is asked for", async () => {
  await served("ocsp_off");
  const origin = origins.ocsp_off;
  assert.deepEqual(origin.requests, ["GET /"]);
  assert.equal(origin.handshakes, 1);
  assert.equal(origin.ocspRequests, 0, "the origin was never asked for a staple");
  await nothingCounted("ocsp_off");
});

test("CRL file: a leaf the CA's CRL file lists is refused, naming the file (hard_fail): revoked", async () => {
  await refused("crl_file_revoked", "revoked", `the certificate is revoked (the CRL file ${crlFile} lists it)`);
  assert.equal(origins.crl_file_revoked.ocspRequests, 0, "no staple handler: nothing stapled");
  assert.equal(await oxy.metric(revocationUnknown("crl_file_revoked")), undefined, "its status was known");
});

test("CRL file: a leaf of the same CA the file does not list is served (hard_fail): the file decides, its CRL URL (404) is never asked", async () => {
  await served("crl_file_good");
  assert.deepEqual(origins.crl_file_good.requests, ["GET /"]);
  assert.equal(crls.hits["/crl-file-good.crl"], undefined, JSON.stringify(crls.hits));
  await nothingCounted("crl_file_good");
});

test("CRL file: another CA's CRL and an impostor's (DER), listing the leaf's serial, do not revoke it (hard_fail)", async () => {
  await served("crl_file_other_ca");
  assert.deepEqual(origins.crl_file_other_ca.requests, ["GET /"]);
  await nothingCounted("crl_file_other_ca");
});

test("Intermediate: a leaf under an intermediate its root's CRL lists is refused, naming the intermediate: revoked", async () => {
  const before = crls.hits["/root.crl"] ?? 0;
  await refused("int_revoked", "revoked", "the certificate of Oxy Revoked Intermediate is revoked (its issuer's CRL lists it)");
  assert.equal((crls.hits["/root.crl"] ?? 0) - before, 1, JSON.stringify(crls.hits));
  assert.equal(await oxy.metric(revocationUnknown("int_revoked")), undefined, "its status was known");
});

test("Intermediate: a leaf under an intermediate the root's CRL does not list is served; the CRL is fetched once for two connections", async () => {
  const before = crls.hits["/root.crl"] ?? 0;
  await served("int_good", "/one");
  await served("int_good", "/two");
  const origin = origins.int_good;
  assert.deepEqual(origin.requests, ["GET /one", "GET /two"]);
  assert.equal(origin.handshakes, 2, "a connection per request (the origin closes them)");
  assert.equal((crls.hits["/root.crl"] ?? 0) - before, 1, `one GET for the root's CRL (${JSON.stringify(crls.hits)})`);
  await nothingCounted("int_good");
});

test("crl_files that cannot be read or are not CRLs are settings errors naming the entry", async () => {
  const notCrl = join(dir, "not-a-crl.pem");
  writeFileSync(notCrl, "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
  const missing = join(dir, "missing.crl");
  const errors = await endpointSettingsErrors(["    http:", "      client:", `        crl_files: [${missing}, ${notCrl}]`]);
  assert.match(errors, new RegExp(`endpoints\\[0\\]\\.http\\.client\\.crl_files\\[0\\]: cannot read ${missing.replaceAll(".", "\\.")}: No such file`));
  assert.match(errors, new RegExp(`endpoints\\[0\\]\\.http\\.client\\.crl_files\\[1\\]: ${notCrl.replaceAll(".", "\\.")}: not a CRL`));
});

test("Oxy exits cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
});
