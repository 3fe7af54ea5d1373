// Test PKI made with the openssl command line: a CA, server certificates for SNI, and a
// client certificate for mTLS. Only test fixtures; Oxy itself links BoringSSL alone.

import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  ca: string;
  server: { chain: string; key: string };
  other: { chain: string; key: string };
  client: { chain: string; key: string };
}

function openssl(args: string[], cwd: string) {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function issue(dir: string, name: string, subject: string, ext: string): { chain: string; key: string } {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject], dir);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", `${name}.pem`, "-extfile", `${name}.ext`], dir);
  return { chain: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

/** Makes a fresh PKI in a temp directory; `serverNames` are extra DNS names for `server`
 * (wildcards too: `*.load.oxy.test`), `serverIps` extra IP addresses (IP SANs) for it;
 * `caName` is the CA's common name (give two PKIs different ones when a client must tell
 * their CAs apart by name). */
export function makePki(serverNames: string[] = [], serverIps: string[] = [], caName = "Oxy Test CA"): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "oxy-pki-"));
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", `/CN=${caName}`], dir);
  const san = ["DNS:localhost", "IP:127.0.0.1", ...serverNames.map((name) => `DNS:${name}`), ...serverIps.map((ip) => `IP:${ip}`)].join(",");
  const server = issue(dir, "server", "/CN=localhost", `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
  const other = issue(dir, "other", "/CN=other.oxy.test", "subjectAltName=DNS:other.oxy.test\nextendedKeyUsage=serverAuth\n");
  const client = issue(dir, "client", "/CN=alice/O=Oxy Tests", "subjectAltName=DNS:alice.oxy.test,email:alice@oxy.test\nextendedKeyUsage=clientAuth\n");
  return { dir, ca: join(dir, "ca.pem"), server, other, client };
}

/** A CA for TLS interception: its certificate and key (PEM file paths). */
export interface InterceptionCa {
  dir: string;
  /** The CA certificate (PEM): what clients that accept interception trust, and
   * `tls_interception.ca_chain`. */
  cert: string;
  /** Its private key (PEM): `tls_interception.ca_key`. */
  key: string;
  /** Its subject's common name, which every minted leaf names as issuer. */
  commonName: string;
}

/** Makes a fresh interception CA in a temp directory: EC P-256, `CA:TRUE` and
 * `keyCertSign` (both critical), valid 2 days. */
export function makeInterceptionCa(commonName = "Oxy Test Interception CA"): InterceptionCa {
  const dir = mkdtempSync(join(tmpdir(), "oxy-interception-ca-"));
  openssl(
    [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", `/CN=${commonName}`,
      "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  );
  return { dir, cert: join(dir, "ca.pem"), key: join(dir, "ca.key"), commonName };
}
