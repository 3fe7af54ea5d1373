// The zero-code proxy boots from settings, serves telemetry, counts connections and drains.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { OxyProcess, freePort, repoRoot, runToExit, writeConfig } from "../lib/oxy.ts";

test("boots, serves /health and /metrics, exits 0 on SIGTERM", async () => {
  const port = await freePort();
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: { endpoints: [{ name: "main", listen: [`127.0.0.1:${port}`] }] },
  });
  const health = await oxy.telemetry("/health");
  assert.equal(health.status, 200);
  assert.equal(health.body, "ready\n");
  // The soft open-files limit is raised to the hard one: a proxy holds many sockets.
  const limits = readFileSync(`/proc/${oxy.child.pid}/limits`, "utf8");
  const [, soft, hard] = limits.match(/^Max open files\s+(\S+)\s+(\S+)/m) ?? [];
  assert.ok(soft && soft === hard, `soft ${soft}, hard ${hard}`);

  const metrics = await oxy.telemetry("/metrics");
  assert.equal(metrics.status, 200);
  assert.match(metrics.body, /^oxy_build_info\{app="oxy",app_version="[^"]+",oxy_version="[^"]+"\} 1$/m);
  assert.match(metrics.body, /^# HELP oxy_process_uptime_seconds Seconds since the process started\.$/m);
  assert.match(metrics.body, /^oxy_panics_total 0$/m);
  assert.match(metrics.body, /^process_resident_memory_bytes \d+/m);

  assert.equal((await oxy.telemetry("/nope")).status, 404);
  const post = await fetch(`${oxy.telemetryUrl}/metrics`, { method: "POST" });
  assert.equal(post.status, 405);

  const local = await fetch(`http://127.0.0.1:${port}/`);
  assert.equal(local.status, 404);
  assert.equal(await local.text(), "no route for this request\n");
  await oxy.waitForMetric('oxy_connections_accepted_total{endpoint="main"}', 1);
  await oxy.waitForMetric('oxy_connections_active{endpoint="main"}', 0);

  const exit = await oxy.stop("SIGTERM");
  assert.deepEqual(exit, { code: 0, signal: null }, oxy.logs());
  assert.match(oxy.logs(), /shutting down: draining connections signal=SIGTERM/);
  assert.match(oxy.logs(), /stopped/);
});

test("exits 0 on SIGINT (Ctrl-C)", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: { endpoints: [{ name: "main", listen: [`127.0.0.1:${await freePort()}`] }] },
  });
  assert.deepEqual(await oxy.stop("SIGINT"), { code: 0, signal: null });
  assert.match(oxy.logs(), /signal=SIGINT/);
});

test("--generate-config output is documented and boots as it is", async () => {
  const generated = await runToExit("oxy", ["--generate-config"]);
  assert.equal(generated.code, 0, generated.stderr);
  assert.match(generated.stdout, /^# Settings for oxy /);
  assert.match(generated.stdout, /# Runtime worker threads; 0 means one per CPU core\./);
  assert.match(generated.stdout, /# PEM file with the private key of the leaf certificate\./);
  // Only the ports change, so that the test does not depend on 8080 and 9090 being free.
  const telemetry = await freePort();
  const endpoint = await freePort();
  const text = generated.stdout
    .replaceAll("127.0.0.1:9090", `127.0.0.1:${telemetry}`)
    .replaceAll("127.0.0.1:8080", `127.0.0.1:${endpoint}`);
  const checked = await runToExit("oxy", ["--check-config", "-c", writeConfig(text)]);
  assert.equal(checked.code, 0, checked.stderr);

  const fromText = await OxyProcess.start({
    binary: "oxy",
    settings: text,
    telemetryListen: `127.0.0.1:${telemetry}`,
  });
  assert.match(fromText.logs(), new RegExp(`endpoint listening endpoint=main listen=127.0.0.1:${endpoint}`));
  assert.deepEqual(await fromText.stop(), { code: 0, signal: null });
});

test("config/default.yaml (make run) is valid and listens on loopback only", async () => {
  const path = join(repoRoot, "config", "default.yaml");
  const checked = await runToExit("oxy", ["--check-config", "-c", path]);
  assert.equal(checked.code, 0, checked.stderr);
  const text = readFileSync(path, "utf8");
  for (const [, addr] of text.matchAll(/(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+/g)) {
    assert.ok(addr === "127.0.0.1" || addr === "[::1]", `non-loopback address ${addr}`);
  }
});

test("--version and --help name the application", async () => {
  const version = await runToExit("oxy", ["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^oxy \d+\.\d+\.\d+/);
  const help = await runToExit("oxy", ["--help"]);
  assert.equal(help.code, 0);
  for (const flag of ["--config", "--generate-config", "--check-config", "--version"]) {
    assert.ok(help.stdout.includes(flag), `--help lacks ${flag}`);
  }
});
