// The request phases after routing: `on_upstream_request` (rewrites the request the
// upstream gets, or answers instead of sending it), `on_error_response` (renders Oxy's
// own error answers: here an HTML page) and `on_request_end` (every answered request,
// with its status, whether it was local, its upstream and the body bytes sent; the
// fixture logs it). The fixture app reverse-proxies to an origin that echoes what it
// got, and to a port that refuses connections.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { refusingTcpPort, type ClosedPort } from "../lib/closed-ports.ts";
import { curl } from "../lib/curl.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { OxyProcess, exchange } from "../lib/oxy.ts";

let oxy: OxyProcess;
let origin: Origin;
let refusing: ClosedPort;
let echo: EchoServer;

before(async () => {
  origin = await startOrigin();
  refusing = await refusingTcpPort();
  echo = await startEchoServer();
  const app = { mark_upstream_requests: true, refuse_upstream_path: "/refused", error_page: true, block_path_prefix: "/blocked" };
  oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "site", listen: ["127.0.0.1:0"], http: { upstream: `http://127.0.0.1:${origin.port}` }, app },
        { name: "down", listen: ["127.0.0.1:0"], http: { upstream: `http://127.0.0.1:${refusing.port}` }, app },
        { name: "plain", listen: ["127.0.0.1:0"], http: { upstream: `http://127.0.0.1:${refusing.port}` } },
        {
          name: "tunnels",
          listen: ["127.0.0.1:0"],
          http: { connect: true, connect_udp: { enabled: true } },
          app: { route_host: "routed.example", route_to: `127.0.0.1:${echo.port}`, block_path_prefix: "/blocked" },
        },
      ],
    },
  });
});

after(async () => {
  await origin.close();
  await refusing.close();
  await echo.close();
});

/** The fixture's `request end` log line for `uri` with `status`. */
async function requestEnd(uri: string, status: number): Promise<string> {
  const escaped = uri.replace(/[/.?]/g, (c) => `\\${c}`);
  return (await oxy.waitForLog(new RegExp(`fixture request end connection=\\d+ user="-" method=GET uri=${escaped} status=${status} .*`)))[0];
}

test("on_upstream_request: the upstream gets the hook's header; on_request_end reports the upstream and the bytes sent", async () => {
  const res = await curl([`${oxy.url("site")}/page?q=1`]);
  assert.equal(res.status, 200, res.stderr);
  const seen = origin.seen.find((r) => r.url === "/page?q=1");
  assert.ok(seen, JSON.stringify(origin.seen));
  assert.equal(seen.headers["x-fixture-upstream"], `127.0.0.1:${origin.port}`);
  // The egress hook knew it was deciding for one HTTP request, not a tunnel.
  await oxy.waitForLog(/fixture egress on its connection connection=\d+ client=\S+ purpose=HttpRequest/);
  const line = await requestEnd("/page?q=1", 200);
  assert.match(line, new RegExp(`local="-" upstream="127\\.0\\.0\\.1:${origin.port}" body_bytes=${Buffer.byteLength(res.body)}$`), line);
});

test("on_upstream_request can answer instead of sending: nothing reaches the upstream", async () => {
  const before = origin.seen.length;
  const res = await curl([`${oxy.url("site")}/refused`]);
  assert.equal(res.status, 451);
  assert.equal(res.body, "refused before sending\n");
  assert.equal(origin.seen.length, before);
  // The app's own answer is not Oxy's error: no error page, and it is not local to Oxy.
  assert.match(await requestEnd("/refused", 451), /local="-" upstream="-" body_bytes=23$/);
});

test("on_error_response renders Oxy's own errors: a 502 from a refused upstream and a block, as HTML", async () => {
  const down = await curl(["-D", "-", `${oxy.url("down")}/x`]);
  assert.equal(down.status, 502);
  assert.match(down.body, /content-type: text\/html/i);
  assert.match(down.body, /<h1>Oxy 502<\/h1><p>[^<]+<\/p>$/);
  assert.match(await requestEnd("/x", 502), new RegExp(`local="connecting to 127\\.0\\.0\\.1:${refusing.port} failed: [^"]+" upstream="-" body_bytes=${Buffer.byteLength(down.body.slice(down.body.indexOf("\r\n\r\n") + 4))}$`));

  const blocked = await curl(["-D", "-", `${oxy.url("site")}/blocked/secret`]);
  assert.equal(blocked.status, 403);
  assert.match(blocked.body, /\r\n\r\n<h1>Oxy 403<\/h1><p>/);
  // The page keeps the header the hook's Block carried, and has its own content type.
  assert.match(blocked.body, /^x-blocked-by: fixture\r$/m);
  assert.match(blocked.body, /^content-type: text\/html\r$/m);
  assert.doesNotMatch(blocked.body, /^content-type: text\/plain/m);
  // Without an error page, the plain answer carries it too.
  const plainBlock = await curl(["-D", "-", `${oxy.url("tunnels")}/blocked/x`]);
  assert.equal(plainBlock.status, 403);
  assert.match(plainBlock.body, /^x-blocked-by: fixture\r$/m);
  await requestEnd("/blocked/secret", 403);

  // An endpoint whose app settings do not ask for it keeps Oxy's plain-text answer.
  const plain = await curl([`${oxy.url("plain")}/x`]);
  assert.equal(plain.status, 502);
  assert.doesNotMatch(plain.body, /<h1>/);
  assert.match(plain.body, /\n$/);
});

test("RequestAction::Route on a CONNECT opens the tunnel to the route; on CONNECT-UDP it is a clear error", async () => {
  const port = oxy.port("tunnels");
  const connected = (await exchange(port, "CONNECT routed.example:443 HTTP/1.1\r\nHost: routed.example:443\r\n\r\nping")).toString();
  assert.match(connected, /^HTTP\/1\.1 200 /);
  assert.ok(connected.endsWith("\r\n\r\nping"), connected);
  assert.equal(echo.connections, 1, "the tunnel went to the route, not to routed.example");

  const udp = (
    await exchange(port, "GET /.well-known/masque/udp/192.0.2.1/53/ HTTP/1.1\r\nHost: routed.example\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n")
  ).toString();
  assert.match(udp, /^HTTP\/1\.1 500 /);
  assert.match(udp, /the request hook routed a CONNECT-UDP or CONNECT-IP request; only CONNECT can be routed/);
  await oxy.waitForMetric('oxy_http_errors_total{endpoint="tunnels",reason="route_not_applicable"}', 1);
});

test("Oxy exits cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
});
