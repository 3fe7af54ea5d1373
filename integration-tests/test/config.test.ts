// Bad settings are reported with YAML path, line and column, all at once, exit code 2,
// before anything binds; failures after validation exit 1 with a clear message; an
// invalid allocator option (`_RJEM_MALLOC_CONF`) aborts at start with jemalloc's message.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { OxyProcess, runToExit, writeConfig } from "../lib/oxy.ts";

async function check(yaml: string, binary = "oxy") {
  const path = writeConfig(yaml);
  const result = await runToExit(binary, ["--check-config", "-c", path]);
  return { ...result, path };
}

function assertNoPanic(stderr: string) {
  assert.doesNotMatch(stderr, /panicked|RUST_BACKTRACE|stack backtrace/);
}

test("an unknown key names its path and line", async () => {
  const r = await check("server:\n  worker_threads: 2\n  shutdown_timeuot: 5s\n");
  assert.equal(r.code, 2);
  assert.match(r.stderr, new RegExp(`${r.path}:3:3: server\\.shutdown_timeuot: unknown field \`shutdown_timeuot\``));
  assertNoPanic(r.stderr);
});

test("a wrong type names its path and line", async () => {
  const r = await check("endpoints:\n  - name: main\n    limits:\n      max_connections: lots\n");
  assert.equal(r.code, 2);
  assert.match(r.stderr, /:4:\d+: endpoints\[0\]\.limits\.max_connections: invalid type: string "lots"/);
  assertNoPanic(r.stderr);
});

test("every type error and unknown key is reported at once, in file order, each with its line", async () => {
  const yaml = [
    "server:",
    "  worker_threads: many",
    "  shutdown_timeuot: 5s",
    "endpoints:",
    "  - name: main",
    "    listen: [127.0.0.1:0, nope]",
    "    limits:",
    "      max_connections: lots",
    "",
  ].join("\n");
  const r = await check(yaml);
  assert.equal(r.code, 2);
  const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith(r.path));
  assert.deepEqual(
    lines.map((l) => l.replace(`${r.path}:`, "").split(": ").slice(0, 2).join(": ").replace(/^(\d+):\d+/, "$1")),
    ["2: server.worker_threads", "3: server.shutdown_timeuot", "6: endpoints[0].listen[1]", "8: endpoints[0].limits.max_connections"],
    r.stderr,
  );
  assertNoPanic(r.stderr);
});

test("a bad socket address names its path and line", async () => {
  const r = await check("endpoints:\n  - name: main\n    listen:\n      - 127.0.0.1:8080\n      - localhost:http\n");
  assert.equal(r.code, 2);
  assert.match(r.stderr, /:5:\d+: endpoints\[0\]\.listen\[1\]: invalid socket address syntax/);
});

test("YAML syntax errors name the line", async () => {
  const r = await check("server:\n  worker_threads: [1, 2\n");
  assert.equal(r.code, 2);
  assert.match(r.stderr, /:\d+:\d+: /);
  assertNoPanic(r.stderr);
});

test("every semantic problem is reported at once, each with its line", async () => {
  const yaml = [
    "endpoints:",
    "  - name: web",
    "    listen: [127.0.0.1:7101]",
    "  - name: web",
    "    listen: [127.0.0.1:7101]",
    "  - name: tls",
    "    listen: [127.0.0.1:7102]",
    "    tls:",
    "      enabled: true",
    "      certificates:",
    "        - chain: /nonexistent/oxy-test.crt",
    "          key: /nonexistent/oxy-test.key",
    "telemetry:",
    "  listen: 127.0.0.1:7102",
    "",
  ].join("\n");
  const r = await check(yaml);
  assert.equal(r.code, 2);
  const lines = r.stderr.trim().split("\n").slice(1);
  assert.deepEqual(
    lines.map((l) => l.replace(`${r.path}:`, "").split(": ").slice(0, 2).join(": ")),
    [
      "4:11: endpoints[1].name",
      "5:14: endpoints[1].listen[0]",
      "7:14: endpoints[2].listen[0]",
      "11:18: endpoints[2].tls.certificates[0].chain",
    ],
    r.stderr,
  );
  assert.match(r.stderr, /duplicate endpoint name "web"/);
  assert.match(r.stderr, /address 127\.0\.0\.1:7101 is already used by endpoints\[0\]\.listen\[0\]/);
  assert.match(r.stderr, /address 127\.0\.0\.1:7102 is already used by telemetry\.listen/);
  assert.match(r.stderr, /cannot read \/nonexistent\/oxy-test\.crt/);
});

test("a bad file never binds anything", async () => {
  const addressFile = join(mkdtempSync(join(tmpdir(), "oxy-test-")), "telemetry-address");
  const yaml = `telemetry:\n  listen: 127.0.0.1:0\n  address_file: ${addressFile}\nendpoints:\n  - name: a\n    listen: [127.0.0.1:0]\n  - name: a\n`;
  const r = await runToExit("oxy", ["-c", writeConfig(yaml)]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /invalid settings/);
  assert.doesNotMatch(r.stderr, /listening/);
  assert.equal(existsSync(addressFile), false, "the telemetry listener was never bound");
});

test("port 0 is no address conflict: endpoints and telemetry may all ask for it", async () => {
  const yaml = [
    "telemetry:",
    "  listen: 127.0.0.1:0",
    "endpoints:",
    "  - name: a",
    "    listen: [127.0.0.1:0, 127.0.0.1:0]",
    "  - name: b",
    "    protocol: tcp",
    "    listen: [127.0.0.1:0]",
    "",
  ].join("\n");
  const r = await check(yaml);
  assert.equal(r.code, 0, r.stderr);
});

test("a missing settings file and bad flags exit 2", async () => {
  const missing = await runToExit("oxy", ["-c", "/nonexistent/oxy.yaml"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /\/nonexistent\/oxy\.yaml: cannot read the settings file/);
  const flag = await runToExit("oxy", ["--no-such-flag"]);
  assert.equal(flag.code, 2);
  const none = await runToExit("oxy", []);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /--config/);
});

test("an address already in use exits 1 naming the endpoint and address", async () => {
  const holder = await OxyProcess.start({
    binary: "oxy",
    settings: { endpoints: [{ name: "first", listen: ["127.0.0.1:0"] }] },
  });
  // The holder keeps the port while the second process tries it.
  const port = holder.port("first");
  const settings = {
    telemetry: { listen: "127.0.0.1:0" },
    endpoints: [{ name: "second", listen: [`127.0.0.1:${port}`] }],
  };
  const r = await runToExit("oxy", ["-c", writeConfig(settings)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(endpoint second\\)`));
  assertNoPanic(r.stderr);
  assert.deepEqual(await holder.stop(), { code: 0, signal: null });
});

test("an application whose start fails exits 1 with its message", async () => {
  const settings = {
    telemetry: { listen: "127.0.0.1:0" },
    endpoints: [{ name: "main", listen: ["127.0.0.1:0"] }],
    app: { fail_start: "no database" },
  };
  const r = await runToExit("fixture-app", ["-c", writeConfig(settings)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /the application failed to start: no database/);
});

test("an invalid allocator option stops Oxy at its start, naming the option", async () => {
  const path = writeConfig("server:\n  worker_threads: 1\n");
  const valid = await runToExit("oxy", ["--check-config", "-c", path], { env: { _RJEM_MALLOC_CONF: "tcache_ncached_max:4097-14336:64" } });
  assert.equal(valid.code, 0, valid.stderr);
  const r = await runToExit("oxy", ["--check-config", "-c", path], { env: { _RJEM_MALLOC_CONF: "tcache_ncached_max:lots" } });
  assert.equal(r.signal, "SIGABRT");
  assert.match(r.stderr, /<jemalloc>: Invalid settings for tcache_ncached_max: tcache_ncached_max:lots/);
  assertNoPanic(r.stderr);
});
