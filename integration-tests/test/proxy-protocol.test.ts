// PROXY protocol v1/v2 from load balancers: the original client reaches hooks and
// X-Forwarded-For; HAProxy and curl as real senders; bad headers are refused and counted
// while other connections keep flowing.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse } from "yaml";
import { curl } from "../lib/curl.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { auditPath, auditRecords } from "../lib/audit.ts";
import { startEchoServer } from "../lib/echo-server.ts";
import { startUdpEcho, udpClient } from "../lib/udp-echo.ts";
import { startHaproxy } from "../lib/haproxy.ts";
import { OxyProcess, exchange, repoRoot } from "../lib/oxy.ts";

let origin: Origin;

before(async () => {
  origin = await startOrigin();
});

after(async () => {
  await origin.close();
});

/** config/proxy-protocol.yaml with its listeners on port 0 (the kernel picks). */
function shippedSettings(): Record<string, any> {
  const settings = parse(readFileSync(join(repoRoot, "config", "proxy-protocol.yaml"), "utf8"));
  assert.equal(settings.telemetry.listen, "127.0.0.1:9091");
  settings.telemetry.listen = "127.0.0.1:0";
  assert.deepEqual(settings.endpoints.map((e: any) => [e.name, e.listen]), [["behind-balancer", ["127.0.0.1:8081"]]]);
  // Forwarding and CONNECT are off by default: the shipped file turns them on.
  assert.equal(settings.endpoints[0].http.forward_proxy, true);
  assert.equal(settings.endpoints[0].http.connect, true);
  settings.endpoints[0].listen = ["127.0.0.1:0"];
  return settings;
}

/** Runs config/proxy-protocol.yaml as shipped, but on port 0. */
async function shippedConfig() {
  const oxy = await OxyProcess.start({ binary: "oxy", settings: shippedSettings() });
  return { oxy, port: oxy.port("behind-balancer") };
}

function httpGet(path: string) {
  return `GET http://127.0.0.1:${origin.port}${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;
}

function v2Header(source: [string, number], destination: [string, number], tlvs: Buffer = Buffer.alloc(0), versionCommand = 0x21, family = 0x11) {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const addresses = Buffer.alloc(12);
  Buffer.from(source[0].split(".").map(Number)).copy(addresses, 0);
  Buffer.from(destination[0].split(".").map(Number)).copy(addresses, 4);
  addresses.writeUInt16BE(source[1], 8);
  addresses.writeUInt16BE(destination[1], 10);
  const head = Buffer.from([versionCommand, family, 0, 0]);
  head.writeUInt16BE(12 + tlvs.length, 2);
  return Buffer.concat([sig, head, addresses, tlvs]);
}

test("the shipped config: a v1 header's client reaches X-Forwarded-For; curl --haproxy-protocol", async () => {
  const { oxy, port } = await shippedConfig();
  const reply = (await exchange(port, `PROXY TCP4 203.0.113.7 127.0.0.1 5555 8081\r\n${httpGet("/v1")}`)).toString();
  assert.match(reply, /^HTTP\/1\.1 200 /);
  const seen = origin.seen.find((r) => r.url === "/v1");
  assert.equal(seen?.headers["x-forwarded-for"], "203.0.113.7");
  await oxy.waitForLog(/connection\{id=\d+ endpoint=behind-balancer peer=127\.0\.0\.1:\d+ client=203\.0\.113\.7:5555\}/);

  const viaCurl = await curl(["--haproxy-protocol", "-x", `http://127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/curl-v1`]);
  assert.equal(viaCurl.status, 200, viaCurl.stderr);
  assert.equal(await oxy.metric('oxy_proxy_protocol_headers_total{endpoint="behind-balancer",version="1"}'), 2);

  // v2 with TLVs: the same, from a raw socket.
  const tlv = Buffer.from([0x02, 0x00, 0x0b, ...Buffer.from("example.com")]);
  const v2 = Buffer.concat([v2Header(["198.51.100.9", 4444], ["127.0.0.1", port], tlv), Buffer.from(httpGet("/v2"))]);
  assert.match((await exchange(port, v2)).toString(), /^HTTP\/1\.1 200 /);
  assert.equal(origin.seen.find((r) => r.url === "/v2")?.headers["x-forwarded-for"], "198.51.100.9");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("HAProxy in front with send-proxy and send-proxy-v2", async () => {
  const { oxy, port } = await shippedConfig();
  const config = [
    "global",
    "  log stdout format raw local0 emerg",
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    "listen v1",
    "  bind fd@3",
    `  server oxy 127.0.0.1:${port} send-proxy`,
    "listen v2",
    "  bind fd@4",
    `  server oxy 127.0.0.1:${port} send-proxy-v2`,
    "",
  ].join("\n");
  // Listening before HAProxy runs: no wait for it to be ready.
  const haproxy = await startHaproxy(2, config);
  const [v1Port, v2Port] = haproxy.ports;
  try {
    for (const [balancer, version] of [[v1Port, "1"], [v2Port, "2"]] as const) {
      const r = await curl(["-x", `http://127.0.0.1:${balancer}`, `http://127.0.0.1:${origin.port}/haproxy-v${version}`]);
      assert.equal(r.status, 200, r.stderr + haproxy.output());
      assert.equal(origin.seen.find((s) => s.url === `/haproxy-v${version}`)?.headers["x-forwarded-for"], "127.0.0.1");
      // One connection through each frontend, and no readiness probe: one header each.
      assert.equal(await oxy.metric(`oxy_proxy_protocol_headers_total{endpoint="behind-balancer",version="${version}"}`), 1);
    }
  } finally {
    await haproxy.stop();
  }
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("bad headers are refused and counted; good connections keep flowing", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "pp", listen: ["127.0.0.1:0"], http: { forward_proxy: true }, proxy_protocol: { mode: "required", trusted: ["127.0.0.0/8"], header_timeout: "300ms" } },
        { name: "strict", listen: ["127.0.0.1:0"], http: { forward_proxy: true }, proxy_protocol: { mode: "optional", trusted: ["10.0.0.0/8"] } },
      ],
    },
  });
  const [port, untrustedPort] = [oxy.port("pp"), oxy.port("strict")];
  const refused = async (payload: string | Buffer) => assert.equal((await exchange(port, payload)).length, 0);
  await refused(httpGet("/no-header"));
  await refused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2");
  await refused(`PROXY ${"x".repeat(200)}\r\n`);
  await refused("PROXY TCP4 not-an-ip 5.6.7.8 1 2\r\n");
  await refused(v2Header(["1.2.3.4", 1], ["5.6.7.8", 2], Buffer.alloc(0), 0x31));
  const badCrc = Buffer.from([0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
  await refused(v2Header(["1.2.3.4", 1], ["5.6.7.8", 2], badCrc));
  // A truncated header: the connection stays open until the header timeout.
  const started = Date.now();
  await refused(Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00]));
  assert.ok(Date.now() - started < 3_000);
  for (const [reason, count] of [["missing", 1], ["truncated", 2], ["too_long", 1], ["malformed", 2], ["bad_crc", 1]] as const) {
    assert.equal(await oxy.metric(`oxy_proxy_protocol_errors_total{endpoint="pp",reason="${reason}"}`), count, reason);
  }
  // A header from outside the trusted networks is refused even in optional mode...
  assert.equal((await exchange(untrustedPort, `PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n${httpGet("/spoof")}`)).length, 0);
  assert.equal(await oxy.metric('oxy_proxy_protocol_errors_total{endpoint="strict",reason="untrusted"}'), 1);
  assert.ok(!origin.seen.some((r) => r.url === "/spoof"));
  // ...where connections without one are served.
  assert.match((await exchange(untrustedPort, httpGet("/plain"))).toString(), /^HTTP\/1\.1 200 /);
  // And good headers still work on the strict endpoint.
  assert.match((await exchange(port, `PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n${httpGet("/good")}`)).toString(), /^HTTP\/1\.1 200 /);
  assert.equal(await oxy.metric("oxy_panics_total"), 0);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("config/proxy-protocol.yaml needs trusted networks", async () => {
  const settings = shippedSettings();
  assert.deepEqual(settings.endpoints[0].proxy_protocol.trusted, ["127.0.0.0/8"]);
  settings.endpoints[0].proxy_protocol.trusted = [];
  const r = await OxyProcess.start({ binary: "oxy", settings }).catch((e: Error) => e);
  assert.ok(r instanceof Error);
  assert.match(r.message, /endpoints\[0\]\.proxy_protocol\.trusted: list the networks of the load balancers/);
});

test("UDP: v2 headers per datagram or on a flow's first datagram name the original client", async () => {
  const echo = await startUdpEcho();
  const audit = auditPath();
  const trusted = { mode: "required", trusted: ["127.0.0.0/8"] };
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      telemetry: { audit: { path: audit } },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "per", protocol: "udp", listen: ["127.0.0.1:0"], udp: { target: `127.0.0.1:${echo.port}`, idle_timeout: "300ms" }, proxy_protocol: { ...trusted, udp: "per_datagram" } },
        { name: "first", protocol: "udp", listen: ["127.0.0.1:0"], udp: { target: `127.0.0.1:${echo.port}`, idle_timeout: "300ms" }, proxy_protocol: { ...trusted, udp: "first_datagram" } },
      ],
    },
  });
  const [perDatagram, firstDatagram] = [oxy.port("per"), oxy.port("first")];
  const header = (ip: string, port: number, to: number) => v2Header([ip, 7000], ["127.0.0.1", to], Buffer.alloc(0), 0x21, 0x12);
  const balancer = await udpClient(perDatagram);
  const send = (data: Buffer) => new Promise<void>((ok) => (balancer as any).send(data).then(ok));
  await send(Buffer.concat([header("203.0.113.9", 7000, perDatagram), Buffer.from("from alice")]));
  await send(Buffer.concat([header("203.0.113.10", 7000, perDatagram), Buffer.from("from bob")]));
  await send(Buffer.from("no header"));
  assert.deepEqual((await balancer.waitFor(2)).sort(), ["from alice", "from bob"]);
  await oxy.waitForMetric('oxy_proxy_protocol_errors_total{endpoint="per",reason="missing"}', 1);

  const first = await udpClient(firstDatagram);
  await first.send(Buffer.concat([header("198.51.100.5", 7000, firstDatagram), Buffer.from("hello")]) as unknown as string);
  await first.send("raw follow-up");
  assert.deepEqual(await first.waitFor(2), ["hello", "raw follow-up"]);

  const records = await auditRecords(audit, 3);
  const originals = records.map((r) => r.original_client).sort();
  assert.deepEqual(originals, ["198.51.100.5:7000", "203.0.113.10:7000", "203.0.113.9:7000"]);
  assert.ok(records.every((r) => /^127\.0\.0\.1:\d+$/.test(r.client)));
  await balancer.close();
  await first.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await echo.close();
});

test("HAProxy with accept-proxy receives Oxy's v1 and v2 headers towards an internal service", async () => {
  const echo = await startEchoServer();
  // HAProxy first: Oxy's settings name its port.
  const config = [
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    "listen internal",
    "  bind fd@3 accept-proxy",
    `  server echo 127.0.0.1:${echo.port}`,
    "",
  ].join("\n");
  const haproxy = await startHaproxy(1, config);
  const [haproxyPort] = haproxy.ports;
  try {
    const oxy = await OxyProcess.start({
      binary: "fixture-app",
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        endpoints: [
          { name: "l4", protocol: "tcp", listen: ["127.0.0.1:0"], app: { internal_service: `127.0.0.1:${haproxyPort}`, internal_tlv: "tenant-7" } },
          { name: "l4v1", protocol: "tcp", listen: ["127.0.0.1:0"], app: { internal_service: `127.0.0.1:${haproxyPort}`, internal_v1: true } },
        ],
      },
    });
    assert.equal((await exchange(oxy.port("l4"), "through haproxy")).toString(), "through haproxy", haproxy.output());
    assert.equal((await exchange(oxy.port("l4v1"), "v1 through haproxy")).toString(), "v1 through haproxy", haproxy.output());
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    await haproxy.stop();
  }
  await echo.close();
});

test("hooks see the original client from a PROXY header", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "pp", listen: ["127.0.0.1:0"], http: { forward_proxy: true }, proxy_protocol: { mode: "required", trusted: ["127.0.0.0/8"] } }],
    },
  });
  await exchange(oxy.port("pp"), `PROXY TCP4 203.0.113.44 127.0.0.1 6000 80\r\n${httpGet("/hooked")}`);
  await oxy.waitForLog(/fixture saw a connection endpoint="pp" peer=127\.0\.0\.1:\d+ client=203\.0\.113\.44:6000/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});
