// Secure defaults: an HTTP endpoint proxies nothing unless its settings say so
// (http.forward_proxy, http.connect and http.connect_udp.enabled are off), and an endpoint
// that proxies on a non-loopback address without proxy authentication or required client
// certificates is warned about by --check-config and at start.

import assert from "node:assert/strict";
import { connect as h2connect, type ClientHttp2Session } from "node:http2";
import { after, before, test } from "node:test";
import { curl } from "../lib/curl.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, exchange, runToExit, writeConfig } from "../lib/oxy.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";

let origin: Origin;
let echo: EchoServer;
let udpEcho: UdpEcho;

before(async () => {
  origin = await startOrigin();
  echo = await startEchoServer();
  udpEcho = await startUdpEcho();
});

after(async () => {
  await origin.close();
  await echo.close();
  await udpEcho.close();
});

/** The status of one request on an h2 session (0 when the stream errors first). */
function h2Status(session: ClientHttp2Session, headers: Record<string, string>): Promise<number> {
  return new Promise((ok) => {
    const req = session.request(headers);
    req.on("response", (h) => {
      ok(Number(h[":status"]));
      req.close();
    });
    req.on("error", () => ok(0));
    req.on("close", () => ok(0));
    req.end();
  });
}

test("with no http settings an endpoint is not an open proxy: forward 404, CONNECT 405, CONNECT-UDP 405", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      // Loopback is allowed, so that nothing below is refused by the egress policy.
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"] }],
    },
  });
  const port = oxy.port("web");
  const seenBefore = origin.seen.length;

  // Absolute-form GET: no route (no upstream, no forwarding).
  const forward = await curl(["-x", oxy.url("web"), `http://127.0.0.1:${origin.port}/open-proxy`]);
  assert.equal(forward.status, 404, forward.stderr);
  assert.equal(forward.body, "no route for this request\n");
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="no_route"}'), 1);

  // CONNECT over HTTP/1.1.
  const connect = (await exchange(port, `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`)).toString();
  assert.match(connect, /^HTTP\/1\.1 405 /);
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="connect_disabled"}'), 1);

  // CONNECT-UDP over HTTP/1.1 (Upgrade: connect-udp).
  const udpPath = `/.well-known/masque/udp/127.0.0.1/${udpEcho.port}/`;
  const upgrade = (
    await exchange(port, `GET ${udpPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n`)
  ).toString();
  assert.match(upgrade, /^HTTP\/1\.1 405 /);
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="connect_udp_disabled"}'), 1);

  // The same over HTTP/2 (h2c): a request for another authority, CONNECT, and (when the
  // server allows extended CONNECT at all) CONNECT-UDP.
  const session = h2connect(oxy.url("web"));
  session.on("error", () => {});
  try {
    assert.equal(await h2Status(session, { ":method": "GET", ":scheme": "http", ":authority": `127.0.0.1:${origin.port}`, ":path": "/open-proxy-h2" }), 404);
    assert.equal(await h2Status(session, { ":method": "CONNECT", ":authority": `127.0.0.1:${echo.port}` }), 405);
    await new Promise<void>((ok) => (session.remoteSettings ? ok() : session.once("remoteSettings", () => ok())));
    if (session.remoteSettings.enableConnectProtocol) {
      const status = await h2Status(session, { ":method": "CONNECT", ":protocol": "connect-udp", ":scheme": "http", ":authority": `127.0.0.1:${port}`, ":path": udpPath, "capsule-protocol": "?1" });
      assert.equal(status, 405);
      assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="connect_udp_disabled"}'), 2);
    }
  } finally {
    session.destroy();
  }
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="no_route"}'), 2);
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="connect_disabled"}'), 2);

  // Nothing was reached: no request at the origin, no tunnel, no UDP flow.
  assert.equal(origin.seen.length, seenBefore);
  assert.equal(echo.connections, 0);
  assert.equal(udpEcho.clients.size, 0);
  assert.equal(await oxy.metric('oxy_tunnel_started_total{endpoint="web",protocol="tcp"}'), undefined);
  assert.equal(await oxy.metric('oxy_tunnel_started_total{endpoint="web",protocol="udp"}'), undefined);
  // The absolute-form requests and the CONNECTs were answered locally, never forwarded
  // or tunnelled.
  assert.equal(await oxy.metric('oxy_http_routes_total{endpoint="web",kind="forward"}'), undefined);
  assert.equal(await oxy.metric('oxy_http_routes_total{endpoint="web",kind="connect"}'), undefined);
  assert.equal(await oxy.metric('oxy_http_routes_total{endpoint="web",kind="local"}'), 4);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

const openWarning = (name: string) => `warning: endpoint ${name}: connect on 0.0.0.0:0 without proxy_auth or required client certificates`;
const warningText = (name: string) => `endpoint ${name}: connect on 0.0.0.0:0 without proxy_auth or required client certificates`;

function endpointSettings(name: string, listen: string, http: Record<string, any>) {
  return { telemetry: { listen: "127.0.0.1:0" }, endpoints: [{ name, listen: [listen], http }] };
}

test("--check-config warns about CONNECT on 0.0.0.0 without proxy_auth, and only then", async () => {
  const open = await runToExit("oxy", ["--check-config", "-c", writeConfig(endpointSettings("open", "0.0.0.0:0", { connect: true }))]);
  assert.equal(open.code, 0, open.stderr);
  assert.ok(open.stderr.includes(openWarning("open")), open.stderr);
  assert.match(open.stderr, /settings are valid/);

  const authenticated = await runToExit("oxy", [
    "--check-config",
    "-c",
    writeConfig(endpointSettings("authed", "0.0.0.0:0", { connect: true, proxy_auth: { enabled: true, users: [{ name: "u", password: "p" }] } })),
  ]);
  assert.equal(authenticated.code, 0, authenticated.stderr);
  assert.doesNotMatch(authenticated.stderr, /warning/);

  const loopback = await runToExit("oxy", ["--check-config", "-c", writeConfig(endpointSettings("local", "127.0.0.1:0", { connect: true }))]);
  assert.equal(loopback.code, 0, loopback.stderr);
  assert.doesNotMatch(loopback.stderr, /warning/);

  const closed = await runToExit("oxy", ["--check-config", "-c", writeConfig(endpointSettings("closed", "0.0.0.0:0", {}))]);
  assert.equal(closed.code, 0, closed.stderr);
  assert.doesNotMatch(closed.stderr, /warning/);
});

test("at start, CONNECT on 0.0.0.0 without proxy_auth is logged as a WARN line, and only then", async () => {
  // Bound on every address, but only loopback traffic is sent (none at all here).
  const open = await OxyProcess.start({ binary: "oxy", settings: endpointSettings("open", "0.0.0.0:0", { connect: true }) });
  // The warning is written before the listeners are ready, so it is in the logs by now.
  const line = open.logs().split("\n").find((l) => l.includes(warningText("open")));
  assert.ok(line, open.logs());
  assert.match(line, /\bWARN\b/);
  assert.deepEqual(await open.stop(), { code: 0, signal: null });

  const quiet = await OxyProcess.start({
    binary: "oxy",
    settings: {
      telemetry: { listen: "127.0.0.1:0" },
      endpoints: [
        { name: "authed", listen: ["0.0.0.0:0"], http: { connect: true, proxy_auth: { enabled: true, users: [{ name: "u", password: "p" }] } } },
        { name: "local", listen: ["127.0.0.1:0"], http: { connect: true, forward_proxy: true } },
      ],
    },
  });
  assert.doesNotMatch(quiet.logs(), /WARN|without proxy_auth/);
  assert.deepEqual(await quiet.stop(), { code: 0, signal: null });
});
