// Multi-tenant endpoints, the ingress hook, connection limits, draining, panics, logs
// and Sentry, observed from outside through the fixture app.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";
import { OxyProcess, closed, openTcp, sleep } from "../lib/oxy.ts";

async function eventually(check: () => Promise<boolean>, timeoutMs = 3_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(25);
  }
}

async function twoEndpoints(extra: Record<string, any> = {}) {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [
        { name: "open", protocol: "tcp", listen: ["127.0.0.1:0"], app: {} },
        { name: "shut", protocol: "tcp", listen: ["127.0.0.1:0"], app: { reject_reason: "tenant closed" } },
      ],
      ...extra,
    },
  });
  return { oxy, open: oxy.port("open"), shut: oxy.port("shut") };
}

test("hooks see the endpoint and its app settings; app metrics are exported", async () => {
  const { oxy, open, shut } = await twoEndpoints({ app: { greeting: "hi from the test" } });
  assert.match(oxy.logs(), /fixture started greeting=hi from the test/);

  await closed(await openTcp(shut));
  await oxy.waitForMetric('oxy_connections_rejected_total{endpoint="shut",reason="ingress_hook"}', 1);
  await oxy.waitForLog(/connection\{id=\d+ endpoint=shut peer=127\.0\.0\.1:\d+\}.*rejected by the ingress hook reason=tenant closed/);

  await closed(await openTcp(open));
  await oxy.waitForMetric('fixture_connections_seen_total{endpoint="open"}', 1);
  await oxy.waitForLog(/fixture saw the end endpoint="open" end=Closed/);
  assert.equal(await oxy.metric('oxy_connections_rejected_total{endpoint="open",reason="ingress_hook"}'), undefined);
  assert.equal(await oxy.metric('fixture_connections_seen_total{endpoint="shut"}'), 1);
  const { body } = await oxy.telemetry("/metrics");
  assert.match(body, /^# HELP fixture_connections_seen_total Connections the fixture's ingress hook saw, by endpoint\.$/m);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("max_connections closes connections beyond the limit and counts them", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      endpoints: [{ name: "small", protocol: "tcp", listen: ["127.0.0.1:0"], limits: { max_connections: 1 }, app: { hold_ms: 1500 } }],
    },
  });
  const port = oxy.port("small");
  const first = await openTcp(port);
  await oxy.waitForMetric('oxy_connections_active{endpoint="small"}', 1);
  const second = await openTcp(port);
  await closed(second);
  await oxy.waitForMetric('oxy_connections_rejected_total{endpoint="small",reason="max_connections"}', 1);
  await closed(first);
  await oxy.waitForMetric('oxy_connections_active{endpoint="small"}', 0);
  const third = await openTcp(port);
  await closed(third);
  await oxy.waitForMetric('fixture_connections_seen_total{endpoint="small"}', 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("SIGTERM drains: /health turns 503, open connections finish, exit 0", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      server: { shutdown_timeout: "10s" },
      endpoints: [{ name: "slow", protocol: "tcp", listen: ["127.0.0.1:0"], app: { hold_ms: 1500 } }],
    },
  });
  const port = oxy.port("slow");
  const socket = await openTcp(port);
  await oxy.waitForMetric('oxy_connections_active{endpoint="slow"}', 1);
  const started = Date.now();
  oxy.signal("SIGTERM");
  await oxy.waitForLog(/shutting down/);
  const health = await oxy.telemetry("/health");
  assert.deepEqual(health, { status: 503, body: "draining\n" });
  // The listener closes once the drain has started.
  await eventually(async () => {
    const probe = await openTcp(port).catch(() => undefined);
    probe?.destroy();
    return probe === undefined;
  });
  const exit = await oxy.waitForExit();
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.ok(Date.now() - started < 8_000, "did not wait for the whole timeout");
  assert.match(oxy.logs(), /fixture saw the end endpoint="slow" end=Closed/);
  await closed(socket);
});

test("the drain period ends: connections still open are closed and the exit is 0", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      server: { shutdown_timeout: "300ms" },
      endpoints: [{ name: "stuck", protocol: "tcp", listen: ["127.0.0.1:0"], app: { hold_ms: 60000 } }],
    },
  });
  const port = oxy.port("stuck");
  const socket = await openTcp(port);
  await oxy.waitForMetric('oxy_connections_active{endpoint="stuck"}', 1);
  const started = Date.now();
  const exit = await oxy.stop("SIGTERM");
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.ok(Date.now() - started < 5_000);
  assert.match(oxy.logs(), /fixture saw the end endpoint="stuck" end=Shutdown/);
  assert.match(oxy.logs(), /drain period over; closed open connections connections=1/);
  await closed(socket);
});

test("a panic in a hook ends that connection only; it is counted, logged and sent to Sentry", async () => {
  const envelopes: string[] = [];
  const sentry = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body = Buffer.concat(chunks);
      if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
      envelopes.push(`${req.url}\n${body.toString("utf8")}`);
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((ok) => sentry.listen(0, "127.0.0.1", ok));
  const address = sentry.address();
  assert.ok(address && typeof address === "object");

  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      telemetry: { sentry: { dsn: `http://publickey@127.0.0.1:${address.port}/42`, environment: "itest" } },
      endpoints: [
        { name: "boom", protocol: "tcp", listen: ["127.0.0.1:0"], app: { panic_on_connect: true } },
        { name: "calm", protocol: "tcp", listen: ["127.0.0.1:0"] },
      ],
    },
  });
  const [boom, calm] = [oxy.port("boom"), oxy.port("calm")];
  await closed(await openTcp(boom));
  await oxy.waitForMetric("oxy_panics_total", 1);
  await oxy.waitForMetric('oxy_connections_rejected_total{endpoint="boom",reason="panic"}', 1);
  await oxy.waitForLog(/ERROR.*panic panic=fixture panic on endpoint boom location=\S+main\.rs:\d+/);
  await oxy.waitForLog(/fixture saw the end endpoint="boom" end=Panicked/);

  // The process and the other endpoint are fine.
  assert.equal((await oxy.telemetry("/health")).status, 200);
  await closed(await openTcp(calm));
  await oxy.waitForMetric('fixture_connections_seen_total{endpoint="calm"}', 1);

  await eventually(async () => envelopes.some((e) => e.includes("fixture panic on endpoint boom")), 10_000).catch(() => {});
  const report = envelopes.find((e) => e.includes("fixture panic on endpoint boom"));
  assert.ok(report, `no Sentry envelope with the panic; got ${envelopes.length} requests`);
  assert.match(report, /^\/api\/42\/envelope\//);
  assert.match(report, /"environment":"itest"/);
  assert.match(report, /"release":"fixture-app@\d+\.\d+\.\d+"/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  sentry.close();
});

test("JSON logs: one object per line, with the connection span", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      telemetry: { log: { format: "json", level: "info" } },
      endpoints: [{ name: "json", protocol: "tcp", listen: ["127.0.0.1:0"] }],
    },
  });
  const port = oxy.port("json");
  await closed(await openTcp(port));
  await oxy.waitForLog(/fixture saw the end/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  const records = oxy
    .logs()
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line));
  assert.ok(records.every((r) => typeof r.timestamp === "string" && typeof r.level === "string"));
  const seen = records.find((r) => r.message === "fixture saw a connection");
  assert.ok(seen, oxy.logs());
  assert.equal(seen.span.name, "connection");
  assert.equal(seen.span.endpoint, "json");
  assert.match(seen.span.peer, /^127\.0\.0\.1:\d+$/);
});

test("the log level comes from settings, and RUST_LOG overrides it", async () => {
  const quiet = await OxyProcess.start({
    binary: "fixture-app",
    settings: { telemetry: { log: { level: "warn" } }, endpoints: [{ name: "q", protocol: "tcp", listen: ["127.0.0.1:0"] }] },
  });
  assert.deepEqual(await quiet.stop(), { code: 0, signal: null });
  assert.doesNotMatch(quiet.logs(), /INFO/);

  const loud = await OxyProcess.start({
    binary: "fixture-app",
    settings: { telemetry: { log: { level: "warn" } }, endpoints: [{ name: "l", protocol: "tcp", listen: ["127.0.0.1:0"] }] },
    env: { RUST_LOG: "debug" },
  });
  await closed(await openTcp(loud.port("l")));
  await loud.waitForLog(/DEBUG.*connection ended/);
  assert.deepEqual(await loud.stop(), { code: 0, signal: null });
  assert.match(loud.logs(), /INFO.*ready/);
});
