// protocol: tcp endpoints: forwarding through the egress policy, DNS with fallback,
// hooks, timeouts and audit records, against local echo servers.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { auditPath, auditRecords } from "../lib/audit.ts";
import { makePki } from "../lib/certs.ts";
import { silentUdpPort } from "../lib/closed-ports.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { curl } from "../lib/curl.ts";
import { startOrigin } from "../lib/origin.ts";
import { OxyProcess, closed, exchange, openTcp, refusedAt, runToExit, until, writeConfig } from "../lib/oxy.ts";

let echo: EchoServer;
let dns: DnsServer;

before(async () => {
  echo = await startEchoServer();
  dns = await startDnsServer({
    "echo.oxy.test": ["127.0.0.1"],
    "public.oxy.test": ["192.0.2.10"],
    "override.oxy.test": ["192.0.2.10"],
  });
});

after(async () => {
  await echo.close();
  await dns.close();
});

/** Settings for one tcp endpoint `fwd`, resolving only through the test's DNS server. */
function forwarder(target: string, extra: Record<string, any> = {}, endpoint: Record<string, any> = {}) {
  const audit = auditPath();
  const settings = {
    telemetry: { audit: { path: audit } },
    dns: { groups: [{ name: "test", servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
    endpoints: [{ name: "fwd", protocol: "tcp", listen: ["127.0.0.1:0"], tcp: { target }, ...endpoint }],
    ...extra,
  };
  return { audit, settings };
}

test("forwards to an allowed target, half-closes, and audits the tunnel", async () => {
  const { audit, settings } = forwarder(`127.0.0.1:${echo.port}`, { egress: { allow: ["127.0.0.0/8"] } });
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  const reply = await exchange(port, "hello through oxy");
  assert.equal(reply.toString(), "hello through oxy");
  const [record] = await auditRecords(audit, 1);
  assert.equal(record.endpoint, "fwd");
  assert.equal(record.protocol, "tcp");
  assert.match(record.client, /^127\.0\.0\.1:\d+$/);
  assert.equal(record.target, `127.0.0.1:${echo.port}`);
  assert.equal(record.resolved, `127.0.0.1:${echo.port}`);
  assert.equal(record.bytes_up, 17);
  assert.equal(record.bytes_down, 17);
  assert.equal(record.close_reason, "completed");
  assert.match(record.start, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(await oxy.metric('oxy_tunnel_bytes_total{direction="up",endpoint="fwd"}'), 17);
  assert.equal(await oxy.metric('oxy_tunnel_ended_total{endpoint="fwd",reason="completed"}'), 1);
  assert.equal(await oxy.metric('oxy_offramp_connects_total{family="ipv4"}'), 1);
  assert.equal(await oxy.metric('oxy_tunnel_zero_copy_total{endpoint="fwd"}'), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("loopback targets are denied unless egress.allow covers them", async () => {
  const before = echo.connections;
  const { audit, settings } = forwarder(`127.0.0.1:${echo.port}`);
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  const reply = await exchange(port, "knock");
  assert.equal(reply.length, 0);
  const [record] = await auditRecords(audit, 1);
  assert.match(record.close_reason, /egress denied: 127\.0\.0\.1 is a loopback address/);
  assert.equal(record.resolved, null);
  assert.equal(await oxy.metric('oxy_offramp_egress_denied_total{reason="loopback"}'), 1);
  assert.equal(echo.connections, before, "the echo server was never reached");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a name that resolves to loopback is caught after resolution", async () => {
  const before = echo.connections;
  const { audit, settings } = forwarder(`echo.oxy.test:${echo.port}`);
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  assert.equal((await exchange(port, "rebinding")).length, 0);
  const [record] = await auditRecords(audit, 1);
  assert.match(record.close_reason, /egress denied: 127\.0\.0\.1 is a loopback address/);
  assert.equal(echo.connections, before);
  assert.ok(dns.queries.includes("echo.oxy.test/A"), dns.queries.join(","));
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });

  // The same name with loopback allowed goes through.
  const allowed = forwarder(`echo.oxy.test:${echo.port}`, { egress: { allow: ["127.0.0.0/8"] } });
  const oxy2 = await OxyProcess.start({ binary: "oxy", settings: allowed.settings });
  assert.equal((await exchange(oxy2.port("fwd"), "resolved")).toString(), "resolved");
  assert.deepEqual(await oxy2.stop(), { code: 0, signal: null });
});

test("a failing primary resolver group falls back to the next group", async () => {
  // A resolver that never answers: its queries time out.
  const dead = await silentUdpPort();
  const { settings } = forwarder(`echo.oxy.test:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"] },
    dns: {
      timeout: "300ms",
      attempts: 1,
      groups: [
        { name: "dead", servers: [{ address: `127.0.0.1:${dead.port}` }] },
        { name: "fallback", servers: [{ address: `127.0.0.1:${dns.port}` }] },
      ],
    },
  });
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  assert.equal((await exchange(port, "via fallback")).toString(), "via fallback");
  const { body } = await oxy.telemetry("/metrics");
  assert.match(body, /^oxy_dns_lookup_duration_seconds_count\{group="dead"\} [1-9]/m);
  assert.match(body, /^oxy_dns_lookup_duration_seconds_count\{group="fallback"\} [1-9]/m);
  assert.match(body, /^oxy_dns_failures_total\{kind="(error|timeout)"\} [1-9]/m);
  // A second connection is answered from the cache.
  assert.equal((await exchange(port, "cached")).toString(), "cached");
  assert.match((await oxy.telemetry("/metrics")).body, /^oxy_dns_cache_total\{result="hit"\} [1-9]/m);
  assert.ok(dead.received() >= 1, "the dead group was asked first");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await dead.close();
});

test("DNS over TLS and over HTTPS, verified against dns.ca_file", async () => {
  const pki = makePki(["dns.oxy.test"]);
  const secure = await startDnsServer({ "echo.oxy.test": ["127.0.0.1"] }, 60, pki.server);
  try {
    for (const [protocol, dnsPort] of [["tls", secure.tlsPort], ["https", secure.httpsPort]] as const) {
      const server = { address: `127.0.0.1:${dnsPort}`, protocol, tls_name: "dns.oxy.test" };
      const before = secure.queries.length;
      const { settings } = forwarder(`echo.oxy.test:${echo.port}`, {
        egress: { allow: ["127.0.0.0/8"] },
        dns: { ca_file: pki.ca, groups: [{ name: protocol, servers: [server] }] },
      });
      const oxy = await OxyProcess.start({ binary: "oxy", settings });
      const port = oxy.port("fwd");
      assert.equal((await exchange(port, `via ${protocol}`)).toString(), `via ${protocol}`);
      assert.ok(secure.queries.length > before, `the ${protocol} server was asked`);
      assert.match((await oxy.telemetry("/metrics")).body, new RegExp(`^oxy_dns_lookup_duration_seconds_count\\{group="${protocol}"\\} [1-9]`, "m"));
      assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
    }
    // A certificate without the configured name is refused: no answer, a DNS failure.
    const asked = secure.queries.length;
    const wrongName = { address: `127.0.0.1:${secure.tlsPort}`, protocol: "tls", tls_name: "other.oxy.test" };
    const { audit, settings } = forwarder(`echo.oxy.test:${echo.port}`, {
      egress: { allow: ["127.0.0.0/8"] },
      dns: { ca_file: pki.ca, timeout: "500ms", attempts: 1, groups: [{ name: "tls", servers: [wrongName] }] },
    });
    const oxy = await OxyProcess.start({ binary: "oxy", settings });
    const port = oxy.port("fwd");
    assert.equal((await exchange(port, "?")).length, 0);
    const [record] = await auditRecords(audit, 1);
    assert.match(record.close_reason, /resolving echo\.oxy\.test failed/);
    assert.equal(secure.queries.length, asked, "no query crossed an unverified connection");
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    await secure.close();
  }
});

test("DNS settings are checked: encrypted servers need tls_name, ca_file must hold certificates", async () => {
  const { settings } = forwarder("echo.oxy.test:80", {
    dns: {
      ca_file: "/nonexistent/ca.pem",
      groups: [{ servers: [
        { address: "127.0.0.1:853", protocol: "tls" },
        { address: "127.0.0.1:443", protocol: "https", tls_name: "dns.oxy.test", https_path: "dns-query" },
      ] }],
    },
  });
  const run = await runToExit("oxy", ["--check-config", "-c", writeConfig(settings)]);
  assert.equal(run.code, 2);
  assert.match(run.stderr, /dns\.groups\[0\]\.servers\[0\]\.tls_name.*tls and https servers need the name on their certificate/);
  assert.match(run.stderr, /dns\.ca_file.*cannot use \/nonexistent\/ca\.pem as a CA bundle/);
  assert.match(run.stderr, /dns\.groups\[0\]\.servers\[1\]\.https_path.*the query path must start with \//);
});

test("the DNS hook overrides and vetoes answers, and its cache item reaches the egress hook", async () => {
  const { settings } = forwarder(`override.oxy.test:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"] },
    app: { dns_override: "override.oxy.test=127.0.0.1", dns_veto: "echo.oxy.test" },
  });
  const oxy = await OxyProcess.start({ binary: "fixture-app", settings });
  const port = oxy.port("fwd");
  // The test's DNS server says 192.0.2.10 (a denied documentation address).
  assert.equal((await exchange(port, "overridden")).toString(), "overridden");
  await oxy.waitForLog(/fixture saw resolved addresses target=Some\("override\.oxy\.test:\d+"\) addrs=\[127\.0\.0\.1\] item=Some\("item-for-override\.oxy\.test"\)/);
  const asked = dns.queries.filter((q) => q === "override.oxy.test/A").length;
  assert.equal((await exchange(port, "from the cache")).toString(), "from the cache");
  assert.equal(dns.queries.filter((q) => q === "override.oxy.test/A").length, asked, "answered from the cache");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });

  const vetoed = forwarder(`echo.oxy.test:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"] },
    app: { dns_veto: "echo.oxy.test" },
  });
  const oxy2 = await OxyProcess.start({ binary: "fixture-app", settings: vetoed.settings });
  assert.equal((await exchange(oxy2.port("fwd"), "?")).length, 0);
  const [record] = await auditRecords(vetoed.audit, 1);
  assert.match(record.close_reason, /resolving echo\.oxy\.test was refused: vetoed by the fixture/);
  assert.deepEqual(await oxy2.stop(), { code: 0, signal: null });
});

test("the egress hook binds the local address; the tunnel hook redirects and sets timeouts", async () => {
  const bound = forwarder(`127.0.0.1:${echo.port}`, { egress: { allow: ["127.0.0.0/8"] } }, { app: { bind_to: "127.0.0.2" } });
  const oxy = await OxyProcess.start({ binary: "fixture-app", settings: bound.settings });
  const before = echo.peers.length;
  assert.equal((await exchange(oxy.port("fwd"), "bound")).toString(), "bound");
  assert.deepEqual(echo.peers.slice(before), ["127.0.0.2"]);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });

  const other = await startEchoServer();
  try {
    const redirected = forwarder(`127.0.0.1:${other.port}`, { egress: { allow: ["127.0.0.0/8"] } }, { app: { tunnel_redirect: `127.0.0.1:${echo.port}` } });
    const oxy2 = await OxyProcess.start({ binary: "fixture-app", settings: redirected.settings });
    const echoBefore = echo.connections;
    assert.equal((await exchange(oxy2.port("fwd"), "redirected")).toString(), "redirected");
    assert.equal(echo.connections, echoBefore + 1, "the redirect target carried the tunnel");
    const [record] = await auditRecords(redirected.audit, 1);
    assert.equal(record.target, `127.0.0.1:${echo.port}`);
    assert.deepEqual(await oxy2.stop(), { code: 0, signal: null });
  } finally {
    await other.close();
  }

  const timed = forwarder(`127.0.0.1:${echo.port}`, { egress: { allow: ["127.0.0.0/8"] } }, { app: { tunnel_idle_ms: 300 }, tunnel: { idle_timeout: "1h" } });
  const oxy3 = await OxyProcess.start({ binary: "fixture-app", settings: timed.settings });
  const socket = await openTcp(oxy3.port("fwd"));
  const started = Date.now();
  await closed(socket);
  const took = Date.now() - started;
  assert.ok(took >= 250 && took < 5_000, `closed after ${took} ms`);
  const [record] = await auditRecords(timed.audit, 1);
  assert.equal(record.close_reason, "idle_timeout");
  assert.deepEqual(await oxy3.stop(), { code: 0, signal: null });
});

test("audit records go to the log stream when no file is set, and only when it keeps them", async () => {
  const { settings } = forwarder(`127.0.0.1:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"] },
    telemetry: { log: { level: "info" } },
  });
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  assert.equal((await exchange(port, "logged")).toString(), "logged");
  await oxy.waitForLog(/oxy::audit: audit record=\{"tunnel_id":"[0-9a-f]{16}","endpoint":"fwd","protocol":"tcp".*"bytes_up":6,"bytes_down":6.*"close_reason":"completed"\}/);
  assert.equal(await oxy.metric('oxy_audit_records_total{sink="log"}'), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });

  const quiet = forwarder(`127.0.0.1:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"] },
    telemetry: { log: { level: "warn" } },
  });
  const oxy2 = await OxyProcess.start({ binary: "oxy", settings: quiet.settings });
  assert.equal((await exchange(oxy2.port("fwd"), "quiet")).toString(), "quiet");
  await oxy2.waitForMetric('oxy_tunnel_ended_total{endpoint="fwd",reason="completed"}', 1);
  assert.equal(await oxy2.metric('oxy_audit_records_total{sink="log"}'), undefined);
  assert.deepEqual(await oxy2.stop(), { code: 0, signal: null });
});

test("an unknown name closes the connection with a DNS reason", async () => {
  const { audit, settings } = forwarder("nowhere.oxy.test:80");
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  assert.equal((await exchange(port, "?")).length, 0);
  const [record] = await auditRecords(audit, 1);
  assert.equal(record.close_reason, "nowhere.oxy.test has no address");
  assert.equal(await oxy.metric('oxy_offramp_connect_failures_total{reason="dns"}'), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("idle tunnels are closed and the audit record says so", async () => {
  const { audit, settings } = forwarder(
    `127.0.0.1:${echo.port}`,
    { egress: { allow: ["127.0.0.0/8"] } },
    { tunnel: { idle_timeout: "300ms" } },
  );
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  const socket = await openTcp(port);
  const started = Date.now();
  await closed(socket);
  const waited = Date.now() - started;
  assert.ok(waited >= 250 && waited < 3_000, `closed after ${waited} ms`);
  const [record] = await auditRecords(audit, 1);
  assert.equal(record.close_reason, "idle_timeout");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("port policy: deny_ports refuses the target port", async () => {
  const { audit, settings } = forwarder(`127.0.0.1:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"], deny_ports: [echo.port] },
  });
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  assert.equal((await exchange(port, "x")).length, 0);
  const [record] = await auditRecords(audit, 1);
  assert.match(record.close_reason, new RegExp(`port ${echo.port} is not allowed`));
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the egress hook chooses the target and the tunnel hook can block", async () => {
  const routed = forwarder("", { egress: { allow: ["127.0.0.0/8"] } }, {
    app: { egress_target: `127.0.0.1:${echo.port}` },
  });
  const oxy = await OxyProcess.start({ binary: "fixture-app", settings: routed.settings });
  assert.equal((await exchange(oxy.port("fwd"), "routed by the app")).toString(), "routed by the app");
  await oxy.waitForLog(/fixture saw the tunnel end target=127\.0\.0\.1:\d+ up=17 down=17 reason=completed/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });

  const blocked = forwarder(`127.0.0.1:${echo.port}`, { egress: { allow: ["127.0.0.0/8"] } }, {
    app: { tunnel_block: "not today" },
  });
  const oxy2 = await OxyProcess.start({ binary: "fixture-app", settings: blocked.settings });
  assert.equal((await exchange(oxy2.port("fwd"), "x")).length, 0);
  const [record] = await auditRecords(blocked.audit, 1);
  assert.equal(record.close_reason, "blocked: not today");
  assert.equal(await oxy2.metric('oxy_tunnel_ended_total{endpoint="fwd",reason="blocked"}'), 1);
  assert.deepEqual(await oxy2.stop(), { code: 0, signal: null });

  const nowhere = forwarder("");
  const oxy3 = await OxyProcess.start({ binary: "oxy", settings: nowhere.settings });
  assert.equal((await exchange(oxy3.port("fwd"), "x")).length, 0);
  const [none] = await auditRecords(nowhere.audit, 1);
  assert.match(none.close_reason, /no target/);
  assert.deepEqual(await oxy3.stop(), { code: 0, signal: null });
});

test("SIGTERM lets an open tunnel finish within the drain period, then cuts it", async (t) => {
  const { audit, settings } = forwarder(`127.0.0.1:${echo.port}`, {
    egress: { allow: ["127.0.0.0/8"] },
    server: { shutdown_timeout: "2s" },
  });
  const oxy = await OxyProcess.start({ binary: "oxy", settings });
  const port = oxy.port("fwd");
  const socket = await openTcp(port);
  t.after(() => socket.destroy());
  socket.write("ping");
  await new Promise((ok) => socket.once("data", ok));
  oxy.signal("SIGTERM");
  await oxy.waitForLog(/shutting down/);
  // The listener is closed: a new connection is refused, not left waiting in a backlog.
  await until(async () => ((await refusedAt(port)) ? true : undefined), `connections to ${port} refused during the drain`);
  // Still pumping during the drain period.
  socket.write("still there?");
  const echoed = await new Promise<Buffer>((ok) => socket.once("data", ok));
  assert.equal(echoed.toString(), "still there?");
  assert.deepEqual(await oxy.waitForExit(), { code: 0, signal: null });
  await closed(socket);
  const [record] = await auditRecords(audit, 1);
  assert.equal(record.close_reason, "shutdown");
  assert.equal(record.bytes_up, 16);
});

test("a decapsulated L4 connection is served as HTTP: the request hook sees each request, the target gets the rest", async () => {
  const origin = await startOrigin();
  const { audit, settings } = forwarder(
    `127.0.0.1:${origin.port}`,
    { egress: { allow: ["127.0.0.0/8"] } },
    { app: { tunnel_decapsulate: true, block_path_prefix: "/blocked" } },
  );
  const oxy = await OxyProcess.start({ binary: "fixture-app", settings });
  const port = oxy.port("fwd");
  const passed = await curl([`http://127.0.0.1:${port}/ok`]);
  assert.equal(passed.status, 200);
  const seen = JSON.parse(passed.body);
  assert.equal(seen.url, "/ok");
  assert.equal(seen.headers["x-fixture-request"], "seen", "the request went through the request hook");
  const blocked = await curl([`http://127.0.0.1:${port}/blocked/x`]);
  assert.equal(blocked.status, 403);
  assert.match(blocked.body, /blocked by the fixture: \/blocked\/x/);
  assert.ok(!origin.seen.some((r) => r.url.startsWith("/blocked")), "a blocked request never reaches the target");
  const records = await auditRecords(audit, 2);
  assert.deepEqual(records.map((r) => r.close_reason), ["decapsulated", "decapsulated"]);
  await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="fwd",reason="decapsulated"}', 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await origin.close();
});

test("a tunnel hook's redirect keeps the egress hook's bind address", async () => {
  const other = await startEchoServer();
  try {
    // The egress hook binds to 127.0.0.2; the tunnel hook then sends the tunnel elsewhere.
    const redirected = forwarder(`127.0.0.1:${other.port}`, { egress: { allow: ["127.0.0.0/8"] } }, {
      app: { bind_to: "127.0.0.2", tunnel_redirect: `127.0.0.1:${echo.port}` },
    });
    const oxy = await OxyProcess.start({ binary: "fixture-app", settings: redirected.settings });
    const before = echo.peers.length;
    assert.equal((await exchange(oxy.port("fwd"), "kept")).toString(), "kept");
    assert.deepEqual(echo.peers.slice(before), ["127.0.0.2"], "the redirected connection left from the bound address");
    const [record] = await auditRecords(redirected.audit, 1);
    assert.equal(record.target, `127.0.0.1:${echo.port}`);
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    await other.close();
  }
});
