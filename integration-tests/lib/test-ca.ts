// Test PKIs made with the openssl CLI in a directory of their own, and the assertions on
// the upstream TLS client's refusals that tests of it share.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { curl } from "./curl.ts";
import type { OxyProcess } from "./oxy.ts";

/** What a server leaf for `localhost` (and 127.0.0.1) carries. */
export const LEAF_EXTENSIONS = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";

/** Runs openssl with `args` in `dir`; its stdout. */
export function opensslIn(dir: string): (args: string[]) => string {
  return (args) => execFileSync("openssl", args, { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** A self-signed EC P-256 CA for `CN=cn` in `dir`, `name.pem` and `name.key`, valid two
 * days; its path. */
export function selfSignedCa(dir: string, name: string, cn: string): string {
  opensslIn(dir)([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-sha256",
    "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return join(dir, `${name}.pem`);
}

/** An `openssl ca` setup for the CA `name` (`name.pem`, `name.key`) in `dir`: `name.cnf`,
 * its database and serials, certificates for two days and CRLs valid for one. */
export function caDatabase(dir: string, name: string): void {
  mkdirSync(join(dir, `${name}-issued`));
  writeFileSync(join(dir, `${name}-index.txt`), "");
  writeFileSync(join(dir, `${name}-serial`), "2000\n");
  writeFileSync(join(dir, `${name}-crlnumber`), "01\n");
  writeFileSync(
    join(dir, `${name}.cnf`),
    [
      "[ca]", "default_ca = test",
      "[test]", `database = ${name}-index.txt`, `new_certs_dir = ${name}-issued`, `serial = ${name}-serial`,
      `crlnumber = ${name}-crlnumber`, `certificate = ${name}.pem`, `private_key = ${name}.key`,
      "default_md = sha256", "default_days = 2", "default_crl_days = 1", "policy = any",
      "unique_subject = no", "copy_extensions = none",
      "[any]", "commonName = supplied",
      "",
    ].join("\n"),
  );
}

export const verificationFailures = (endpoint: string, reason: string) =>
  `oxy_tls_upstream_verification_failures_total{endpoint="${endpoint}",reason="${reason}"}`;
export const revocationUnknown = (endpoint: string) => `oxy_tls_revocation_unknown_total{endpoint="${endpoint}"}`;

/** GET / through `oxy`'s endpoint `name` to an origin at `host:port`; asserts a 502 whose
 * body is the certificate refusal `reason`, counted under `label` and under no other
 * reason, and as an `upstream_certificate` HTTP error. */
export async function assertRefused(oxy: OxyProcess, name: string, port: number, label: string, reason: string, host = "localhost"): Promise<void> {
  const res = await curl([`${oxy.url(name)}/`]);
  assert.equal(res.status, 502, `${res.stderr}\n${oxy.logs()}`);
  assert.equal(res.body, `certificate verification failed for ${host}:${port}: ${reason}\n`);
  await oxy.waitForMetric(verificationFailures(name, label), 1);
  await oxy.waitForMetric(`oxy_http_errors_total{endpoint="${name}",reason="upstream_certificate"}`, 1);
  const metrics = (await oxy.telemetry("/metrics")).body;
  const labels = [...metrics.matchAll(new RegExp(`^oxy_tls_upstream_verification_failures_total\\{endpoint="${name}",reason="(\\w+)"\\}`, "gm"))];
  assert.deepEqual(labels.map((m) => m[1]), [label], "one reason only");
}

/** Asserts that `oxy`'s endpoint `name` counted no certificate refusal, no HTTP error and
 * (unless `unknown`) no unknown revocation status. */
export async function assertNothingCounted(oxy: OxyProcess, name: string, unknown = false): Promise<void> {
  const metrics = (await oxy.telemetry("/metrics")).body;
  assert.doesNotMatch(metrics, new RegExp(`^oxy_tls_upstream_verification_failures_total\\{endpoint="${name}"`, "m"));
  assert.doesNotMatch(metrics, new RegExp(`^oxy_http_errors_total\\{endpoint="${name}"`, "m"));
  if (!unknown) assert.doesNotMatch(metrics, new RegExp(`^oxy_tls_revocation_unknown_total\\{endpoint="${name}"`, "m"));
}
