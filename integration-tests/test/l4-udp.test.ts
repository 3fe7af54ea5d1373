// protocol: udp endpoints: one flow per client, through the egress policy, with idle
// timeouts and audit records, against a local UDP echo server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { auditPath, auditRecords } from "../lib/audit.ts";
import { startUdpEcho, udpClient, type UdpEcho } from "../lib/udp-echo.ts";
import { OxyProcess, runToExit, writeConfig } from "../lib/oxy.ts";

let echo: UdpEcho;

before(async () => {
  echo = await startUdpEcho();
});

after(async () => {
  await echo.close();
});

async function udpEndpoint(extra: Record<string, any> = {}, udp: Record<string, any> = {}) {
  const audit = auditPath();
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      telemetry: { audit: { path: audit } },
      endpoints: [
        { name: "dns-like", protocol: "udp", listen: ["127.0.0.1:0"], udp: { target: `127.0.0.1:${echo.port}`, idle_timeout: "300ms", ...udp } },
      ],
      ...extra,
    },
  });
  assert.equal(oxy.endpoint("dns-like").listeners[0].transport, "udp");
  return { oxy, port: oxy.port("dns-like", "udp"), audit };
}

test("traffic keeps a flow open past its idle timeout: the timer follows the last datagram", async () => {
  const { oxy, port, audit } = await udpEndpoint({ egress: { allow: ["127.0.0.0/8"] } }, { idle_timeout: "2s" });
  const client = await udpClient(port);
  // Six datagrams 600 ms apart: three seconds of traffic, never two seconds idle.
  for (let i = 1; i <= 6; i++) {
    await client.send(`d${i}`);
    assert.equal((await client.waitFor(i)).length, i);
    if (i < 6) await new Promise((ok) => setTimeout(ok, 600));
  }
  const [flow] = await auditRecords(audit, 1);
  assert.equal(flow.packets_up, 6, `one flow carried them all: ${JSON.stringify(flow)}`);
  assert.equal(flow.close_reason, "idle_timeout");
  await client.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("datagrams flow both ways, one flow per client, audited when idle", async () => {
  const { oxy, port, audit } = await udpEndpoint({ egress: { allow: ["127.0.0.0/8"] } });
  const a = await udpClient(port);
  const b = await udpClient(port);
  await a.send("one");
  await a.send("two");
  await b.send("three");
  assert.deepEqual(await a.waitFor(2), ["one", "two"]);
  assert.deepEqual(await b.waitFor(1), ["three"]);
  const flows = await auditRecords(audit, 2);
  const first = flows.find((r) => r.packets_up === 2);
  assert.ok(first, JSON.stringify(flows));
  assert.equal(first.protocol, "udp");
  assert.equal(first.packets_down, 2);
  assert.equal(first.bytes_up, 6);
  assert.equal(first.close_reason, "idle_timeout");
  assert.equal(first.resolved, `127.0.0.1:${echo.port}`);
  assert.equal(await oxy.metric('oxy_tunnel_started_total{endpoint="dns-like",protocol="udp"}'), 2);
  // After the idle timeout a new datagram starts a new flow.
  await a.send("again");
  assert.deepEqual(await a.waitFor(3), ["one", "two", "again"]);
  await a.close();
  await b.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a target the egress policy denies gets no datagram, and the refusal is counted", async () => {
  const before = echo.clients.size;
  const { oxy, port, audit } = await udpEndpoint();
  const c = await udpClient(port);
  await c.send("knock");
  await c.send("knock again");
  const [record] = await auditRecords(audit, 1);
  assert.match(record.close_reason, /egress denied: 127\.0\.0\.1 is a loopback address/);
  await oxy.waitForMetric('oxy_udp_dropped_total{endpoint="dns-like",reason="refused"}', 2);
  assert.equal(c.replies.length, 0);
  assert.equal(echo.clients.size, before);
  await c.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a udp and a tcp endpoint may share an address: TCP and UDP ports do not collide", async () => {
  // Only checked, never bound: a number picked for both could be taken on either side.
  // (Binding both is what every HTTP/3 endpoint does: its QUIC socket takes its TCP port.)
  const yaml = [
    "endpoints:",
    "  - name: dns-like",
    "    protocol: udp",
    "    listen: [127.0.0.1:7401]",
    "    udp: { target: 127.0.0.1:53 }",
    "  - name: same-port-tcp",
    "    protocol: tcp",
    "    listen: [127.0.0.1:7401]",
    "",
  ].join("\n");
  const r = await runToExit("oxy", ["--check-config", "-c", writeConfig(yaml)]);
  assert.equal(r.code, 0, r.stderr);
});

test("a flow's queue is bounded: datagrams beyond it are dropped and counted", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        {
          name: "slow",
          protocol: "udp",
          listen: ["127.0.0.1:0"],
          udp: { target: `127.0.0.1:${echo.port}`, queue: 2 },
          // The ingress hook holds the new flow, so its queue fills up.
          app: { hold_ms: 500 },
        },
      ],
    },
  });
  const client = await udpClient(oxy.port("slow"));
  for (let i = 0; i < 10; i++) await client.send(`d${i}`);
  assert.deepEqual(await client.waitFor(2), ["d0", "d1"]);
  await oxy.waitForMetric('oxy_udp_dropped_total{endpoint="slow",reason="queue_full"}', 8);
  await client.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a tunnel hook's UDP redirect keeps the bind address and runs on_resolved for the new target", async () => {
  const other = await startUdpEcho();
  const audit = auditPath();
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      telemetry: { audit: { path: audit } },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        {
          name: "dns-like",
          protocol: "udp",
          listen: ["127.0.0.1:0"],
          udp: { target: `127.0.0.1:${other.port}`, idle_timeout: "300ms" },
          app: { bind_to: "127.0.0.2", tunnel_redirect: `127.0.0.1:${echo.port}` },
        },
      ],
    },
  });
  try {
    const known = new Set(echo.clients);
    const client = await udpClient(oxy.port("dns-like", "udp"));
    await client.send("redirected");
    assert.deepEqual(await client.waitFor(1), ["redirected"]);
    await client.close();
    const fresh = [...echo.clients].filter((c) => !known.has(c));
    assert.equal(fresh.length, 1);
    assert.match(fresh[0], /^127\.0\.0\.2:\d+$/, "the redirected flow left from the bound address");
    const [record] = await auditRecords(audit, 1);
    assert.equal(record.resolved, `127.0.0.1:${echo.port}`);
    await oxy.waitForLog(new RegExp(`fixture saw resolved addresses target=Some\\("127\\.0\\.0\\.1:${echo.port}"\\)`));
  } finally {
    await oxy.stop();
    await other.close();
  }
});
