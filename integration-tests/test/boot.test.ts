// The zero-code proxy boots from settings, serves telemetry, counts connections and drains.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { makePki } from "../lib/certs.ts";
import { curl } from "../lib/curl.ts";
import { OxyProcess, portOf, repoRoot, runToExit, writeConfig, type EndpointInfo } from "../lib/oxy.ts";

test("boots, serves /health and /metrics, exits 0 on SIGTERM", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: { endpoints: [{ name: "main", listen: ["127.0.0.1:0"] }] },
  });
  const port = oxy.port("main");
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

test("every listener binds port 0; the telemetry address file and /endpoints tell the bound addresses", async () => {
  const pki = makePki();
  const tls = { enabled: true, certificates: [pki.server] };
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      endpoints: [
        { name: "web", listen: ["127.0.0.1:0", "[::1]:0"] },
        { name: "l4", protocol: "tcp", listen: ["127.0.0.1:0"], tcp: { target: "127.0.0.1:9" } },
        { name: "dgram", protocol: "udp", listen: ["127.0.0.1:0"], udp: { target: "127.0.0.1:9" } },
        { name: "h3", listen: ["127.0.0.1:0"], tls, http: { h3: { enabled: true } } },
        { name: "h3-own", listen: ["127.0.0.1:0"], tls, http: { h3: { enabled: true, listen: ["127.0.0.1:0"] } } },
      ],
    },
  });
  // The file OxyProcess.start read: the address and a newline, nothing else.
  assert.match(oxy.telemetryAddress, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(portOf(oxy.telemetryAddress), 0);
  const res = await fetch(`${oxy.telemetryUrl}/endpoints`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const { endpoints } = (await res.json()) as { endpoints: EndpointInfo[] };
  assert.deepEqual(endpoints, oxy.endpoints(), "the same answer each time");
  const shape = endpoints.map((e) => [e.name, e.protocol, e.listeners.map((l) => l.transport)]);
  assert.deepEqual(shape, [
    ["web", "http", ["tcp", "tcp"]],
    ["l4", "tcp", ["tcp"]],
    ["dgram", "udp", ["udp"]],
    ["h3", "http", ["tcp", "quic"]],
    ["h3-own", "http", ["tcp", "quic"]],
  ]);
  const [v4, v6] = oxy.endpoint("web").listeners.map((l) => l.address);
  assert.match(v4, /^127\.0\.0\.1:\d+$/);
  assert.match(v6, /^\[::1\]:\d+$/);
  for (const e of endpoints) for (const l of e.listeners) assert.ok(portOf(l.address) > 0, JSON.stringify(e));
  // HTTP/3 without a listen list of its own shares the TCP listener's port number.
  assert.equal(oxy.port("h3", "quic"), oxy.port("h3", "tcp"));
  assert.equal(oxy.port("h3"), oxy.port("h3", "tcp"), "the first listener by default");
  assert.match(oxy.address("h3-own", "quic"), /^127\.0\.0\.1:\d+$/);
  assert.equal(oxy.url("web"), `http://${v4}`);

  // They serve: both HTTP listeners, and the TCP one of an HTTP/3 endpoint.
  for (const address of [v4, v6]) {
    const res = await fetch(`http://${address}/`);
    assert.equal(res.status, 404, address);
    await res.arrayBuffer();
  }
  const h3Tcp = await curl(["--cacert", pki.ca, `https://localhost:${oxy.port("h3")}/`]);
  assert.equal(h3Tcp.status, 404, h3Tcp.stderr);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("exits 0 on SIGINT (Ctrl-C)", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: { endpoints: [{ name: "main", listen: ["127.0.0.1:0"] }] },
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
  // Only the ports change (to port 0, the kernel picks), so that the test does not depend
  // on 8080 and 9090 being free.
  assert.match(generated.stdout, /127\.0\.0\.1:9090/);
  assert.match(generated.stdout, /127\.0\.0\.1:8080/);
  const text = generated.stdout.replaceAll("127.0.0.1:9090", "127.0.0.1:0").replaceAll("127.0.0.1:8080", "127.0.0.1:0");
  const checked = await runToExit("oxy", ["--check-config", "-c", writeConfig(text)]);
  assert.equal(checked.code, 0, checked.stderr);

  const fromText = await OxyProcess.start({ binary: "oxy", settings: text });
  const endpoints = fromText.endpoints();
  assert.deepEqual(
    endpoints.map((e) => [e.name, e.protocol, e.listeners.map((l) => l.transport)]),
    [["main", "http", ["tcp"]]],
  );
  const address = fromText.address("main");
  assert.match(address, /^127\.0\.0\.1:\d+$/);
  // The log names the bound address, not the configured port 0.
  assert.match(fromText.logs(), new RegExp(`endpoint listening endpoint=main listen=${address.replaceAll(".", "\\.")}`));
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
