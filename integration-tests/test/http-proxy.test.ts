// HTTP endpoints with real clients: curl (absolute-form, CONNECT), undici's ProxyAgent,
// node:http2 CONNECT over h2c, the HTTP hooks, and bad input from raw sockets.

import assert from "node:assert/strict";
import { connect as h2connect } from "node:http2";
import { after, before, test } from "node:test";
import { ProxyAgent, fetch as undiciFetch } from "undici";
import { refusingTcpPort } from "../lib/closed-ports.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { curl } from "../lib/curl.ts";
import { OxyProcess, exchange } from "../lib/oxy.ts";

let origin: Origin;
let echo: EchoServer;
let dns: DnsServer;

before(async () => {
  origin = await startOrigin();
  echo = await startEchoServer();
  dns = await startDnsServer({ "origin.oxy.test": ["127.0.0.1"] });
});

after(async () => {
  await origin.close();
  await echo.close();
  await dns.close();
});

async function proxy(options: { binary?: string; allowLoopback?: boolean; http?: Record<string, any>; app?: Record<string, any> } = {}) {
  const oxy = await OxyProcess.start({
    binary: options.binary ?? "oxy",
    settings: {
      dns: { groups: [{ servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
      egress: { allow: options.allowLoopback === false ? [] : ["127.0.0.0/8"] },
      // Forwarding and CONNECT are off by default; these tests use both.
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true, connect: true, ...options.http }, app: options.app ?? {} }],
    },
  });
  return { oxy, port: oxy.port("web"), url: oxy.url("web") };
}

test("curl: absolute-form forward proxying with proxy header semantics", async () => {
  const { oxy, url } = await proxy({ http: { x_forwarded_for: true } });
  const r = await curl(["-x", url, "-H", "Connection: x-private", "-H", "X-Private: secret", "-H", "Proxy-Authorization: Basic Zm9vOmJhcg==", "-D", "-", `http://origin.oxy.test:${origin.port}/hello?q=1`]);
  assert.equal(r.status, 200, r.stderr);
  const headers = r.body.slice(0, r.body.indexOf("\r\n\r\n")).toLowerCase();
  assert.match(headers, /^via: 1\.1 oxy$/m);
  assert.match(headers, /^x-origin: yes$/m);
  assert.doesNotMatch(headers, /^x-hop:/m, "hop-by-hop response headers named by Connection are removed");
  const seen = JSON.parse(r.body.slice(r.body.indexOf("\r\n\r\n") + 4));
  assert.equal(seen.url, "/hello?q=1");
  assert.equal(seen.headers.host, `origin.oxy.test:${origin.port}`);
  assert.equal(seen.headers.via, "1.1 oxy");
  assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(seen.headers["x-private"], undefined);
  assert.equal(seen.headers["proxy-authorization"], undefined);
  assert.equal(await oxy.metric('oxy_http_routes_total{endpoint="web",kind="forward"}'), 1);
  assert.equal(await oxy.metric('oxy_http_requests_total{endpoint="web",method="GET",status="200",version="1.1"}'), 1);
  await oxy.waitForLog(/oxy::access: request method=GET uri=http:\/\/origin\.oxy\.test:\d+\/hello\?q=1 version="1\.1" status=200 duration_ms=\d+/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("curl: CONNECT tunnels (-p) and a POST body through them", async () => {
  const { oxy, url } = await proxy();
  const r = await curl(["-p", "-x", url, "--data-binary", "payload-123", `http://127.0.0.1:${origin.port}/post`]);
  assert.equal(r.status, 200, r.stderr);
  assert.equal(JSON.parse(r.body).body, "payload-123");
  assert.equal(await oxy.metric('oxy_http_routes_total{endpoint="web",kind="connect"}'), 1);
  await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="web",reason="completed"}', 1);
  // Plain HTTP/1.1 on both sides: the tunnel was forwarded with splice(2).
  assert.equal(await oxy.metric('oxy_tunnel_zero_copy_total{endpoint="web"}'), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("bytes a client sends right behind its CONNECT request reach the target first", async () => {
  const { oxy, port } = await proxy();
  const request = `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`;
  const reply = (await exchange(port, request + "early bytes")).toString();
  assert.match(reply, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(reply.slice(reply.indexOf("\r\n\r\n") + 4), "early bytes");
  await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="web",reason="completed"}', 1);
  assert.equal(await oxy.metric('oxy_tunnel_bytes_total{direction="up",endpoint="web"}'), 11);
  assert.equal(await oxy.metric('oxy_tunnel_zero_copy_total{endpoint="web"}'), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the egress policy answers 403, DNS failures 502, slow upstreams 504", async () => {
  const denied = await proxy({ allowLoopback: false });
  const forward = await curl(["-x", denied.url, `http://127.0.0.1:${origin.port}/`]);
  assert.equal(forward.status, 403);
  assert.match(forward.body, /egress denied: 127\.0\.0\.1 is a loopback address/);
  const tunnel = await curl(["-p", "-x", denied.url, `http://origin.oxy.test:${origin.port}/`]);
  assert.notEqual(tunnel.code, 0);
  assert.match(tunnel.stderr, /403/);
  assert.deepEqual(await denied.oxy.stop(), { code: 0, signal: null });

  const { oxy, url } = await proxy({ http: { client: { response_timeout: "500ms" } } });
  const missing = await curl(["-x", url, "http://missing.oxy.test/"]);
  assert.equal(missing.status, 502);
  assert.match(missing.body, /missing\.oxy\.test has no address/);
  const slow = await curl(["-x", url, `http://127.0.0.1:${origin.port}/slow`]);
  assert.equal(slow.status, 504);
  const closedPort = await refusingTcpPort();
  try {
    const refused = await curl(["-x", url, `http://127.0.0.1:${closedPort.port}/`]);
    assert.equal(refused.status, 502);
  } finally {
    await closedPort.close();
  }
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("an endpoint's egress section: a reverse proxy reaches a loopback backend the forward proxy endpoint may not; inherit: false narrows", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      // Loopback is denied at the top level, and 10.0.0.0/8 allowed (it is never reached).
      egress: { allow: ["10.0.0.0/8"] },
      endpoints: [
        { name: "backend", listen: ["127.0.0.1:0"], http: { upstream: `http://127.0.0.1:${origin.port}` }, egress: { allow: ["127.0.0.1/32"] } },
        { name: "forward", listen: ["127.0.0.1:0"], http: { forward_proxy: true, connect: true } },
        // Its own policy: loopback on the origin's port only, nothing inherited.
        { name: "narrow", listen: ["127.0.0.1:0"], http: { forward_proxy: true, connect: true }, egress: { allow: ["127.0.0.0/8"], allow_ports: [origin.port], inherit: false } },
      ],
    },
  });
  const before = origin.seen.length;
  const backend = await curl([`${oxy.url("backend")}/private`]);
  assert.equal(backend.status, 200, backend.stderr);
  assert.equal(origin.seen.length, before + 1);

  // The same origin through the forward proxy endpoint: refused before any connection.
  const forward = await curl(["-x", oxy.url("forward"), `http://127.0.0.1:${origin.port}/private`]);
  assert.equal(forward.status, 403);
  assert.match(forward.body, /egress denied: 127\.0\.0\.1 is a loopback address; egress\.allow does not cover it/);
  const tunnel = await curl(["-p", "-x", oxy.url("forward"), `http://127.0.0.1:${origin.port}/private`]);
  assert.notEqual(tunnel.code, 0);
  assert.match(tunnel.stderr, /403/);
  assert.equal(origin.seen.length, before + 1, "nothing reached the origin through the forward proxy");

  // The narrow endpoint reaches the origin's port and no other, even one the top level allows.
  const narrow = await curl(["-x", oxy.url("narrow"), `http://127.0.0.1:${origin.port}/narrow`]);
  assert.equal(narrow.status, 200, narrow.stderr);
  const otherPort = await curl(["-x", oxy.url("narrow"), `http://127.0.0.1:${echo.port}/`]);
  assert.equal(otherPort.status, 403);
  assert.match(otherPort.body, new RegExp(`egress denied: port ${echo.port} is not allowed`));
  const inherited = await curl(["-x", oxy.url("narrow"), `http://10.0.0.1:${origin.port}/`]);
  assert.equal(inherited.status, 403, "10.0.0.0/8 is the top level's, not inherited");
  assert.match(inherited.body, /egress denied: 10\.0\.0\.1 is a private address/);
  assert.equal(origin.seen.length, before + 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("undici ProxyAgent fetches through a CONNECT tunnel", async () => {
  const { oxy, url } = await proxy();
  const agent = new ProxyAgent(url);
  const res = await undiciFetch(`http://127.0.0.1:${origin.port}/via-undici`, { dispatcher: agent });
  assert.equal(res.status, 200);
  assert.equal(JSON.parse(await res.text()).url, "/via-undici");
  await agent.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("node:http2 CONNECT over h2c (RFC 9113 §8.5) carries a byte stream", async () => {
  const { oxy, url } = await proxy();
  const session = h2connect(url);
  const stream = session.request({ ":method": "CONNECT", ":authority": `127.0.0.1:${echo.port}` });
  const status = await new Promise<number>((ok) => stream.on("response", (h) => ok(Number(h[":status"]))));
  assert.equal(status, 200);
  stream.write("over h2");
  const echoed = await new Promise<Buffer>((ok) => stream.once("data", ok));
  assert.equal(echoed.toString(), "over h2");
  stream.end();
  await new Promise((ok) => stream.on("close", ok).resume());
  const denied = session.request({ ":method": "CONNECT", ":authority": "10.1.2.3:443" });
  const deniedStatus = await new Promise<number>((ok) => denied.on("response", (h) => ok(Number(h[":status"]))));
  assert.equal(deniedStatus, 403);
  denied.close();
  session.close();
  // An HTTP/2 stream cannot be spliced: the buffered copy carried it.
  await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="web",reason="completed"}', 1);
  assert.equal(await oxy.metric('oxy_tunnel_zero_copy_total{endpoint="web"}'), undefined);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("hooks block, answer, route by host, and rewrite headers both ways", async () => {
  const { oxy, url } = await proxy({
    binary: "fixture-app",
    app: { block_path_prefix: "/admin", respond_path: "/local", route_host: "app.internal", route_to: `127.0.0.1:${origin.port}` },
  });
  const blocked = await curl([`${url}/admin/users`]);
  assert.equal(blocked.status, 403);
  assert.equal(blocked.body, "blocked by the fixture: /admin/users\n");
  const local = await curl([`${url}/local`]);
  assert.deepEqual([local.status, local.body], [200, "hello from the fixture app\n"]);
  const routed = await curl(["-D", "-", "-H", "Host: app.internal", `${url}/routed`]);
  assert.equal(routed.status, 200);
  assert.match(routed.body.toLowerCase(), /^x-fixture-response: seen$/m);
  const seen = origin.seen.at(-1);
  assert.equal(seen?.url, "/routed");
  assert.equal(seen?.headers["x-fixture-request"], "seen");
  const unrouted = await curl([`${url}/elsewhere`]);
  assert.equal(unrouted.status, 404);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the egress hook's bind address applies to forwarded requests and CONNECT tunnels", async () => {
  const { oxy, url } = await proxy({ binary: "fixture-app", app: { bind_to: "127.0.0.2" } });
  const forward = await curl(["-x", url, `http://127.0.0.1:${origin.port}/bound`]);
  assert.equal(forward.status, 200, forward.stderr);
  assert.equal(JSON.parse(forward.body).remote, "127.0.0.2");
  const tunnel = await curl(["-p", "-x", url, `http://127.0.0.1:${origin.port}/bound-tunnel`]);
  assert.equal(tunnel.status, 200, tunnel.stderr);
  assert.equal(JSON.parse(tunnel.body).remote, "127.0.0.2");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("http.upstream makes a reverse proxy for origin-form requests", async () => {
  const { oxy, url } = await proxy({ http: { upstream: `http://127.0.0.1:${origin.port}`, forward_proxy: false } });
  const r = await curl([`${url}/api/v1?x=2`]);
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).url, "/api/v1?x=2");
  assert.equal(await oxy.metric('oxy_http_routes_total{endpoint="web",kind="reverse"}'), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("bad input gets 400/431 or a clean close, and the server keeps serving", async () => {
  const { oxy, port, url } = await proxy({ http: { limits: { max_header_bytes: 8192 } } });
  const badLine = (await exchange(port, "GARBAGE\r\n\r\n")).toString();
  assert.match(badLine, /^HTTP\/1\.1 400 /);
  const huge = (await exchange(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`)).toString();
  assert.match(huge, /^HTTP\/1\.1 431 /);
  // Content-Length with Transfer-Encoding: chunked wins (RFC 9112 §6.3), the connection
  // closes after the response, and nothing after the chunked body is read as a request.
  const smuggle = (
    await exchange(
      port,
      `POST http://127.0.0.1:${origin.port}/front HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://127.0.0.1:${origin.port}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`,
    )
  ).toString();
  assert.match(smuggle, /^HTTP\/1\.1 200 /);
  assert.match(smuggle.toLowerCase(), /\r\nconnection: close\r\n/);
  assert.ok(origin.seen.some((r) => r.url === "/front"));
  assert.ok(!origin.seen.some((r) => r.url === "/smuggled"), "a smuggled request reached the origin");
  const badConnect = (await exchange(port, "CONNECT not-an-authority HTTP/1.1\r\nHost: x\r\n\r\n")).toString();
  assert.match(badConnect, /^HTTP\/1\.1 400 /);
  const h2garbage = await exchange(port, Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.alloc(64, 0xff)]));
  assert.ok(h2garbage.length < 1024, "a short GOAWAY at most");
  const ok = await curl(["-x", url, `http://127.0.0.1:${origin.port}/still-fine`]);
  assert.equal(ok.status, 200);
  assert.equal(await oxy.metric("oxy_panics_total"), 0);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("chaining through an upstream proxy (a second Oxy) for CONNECT, forwarding and L4", async () => {
  // The upstream first, in a process of its own: the front's settings name its port.
  const upstream = await OxyProcess.start({
    binary: "oxy",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "upstream", listen: ["127.0.0.1:0"], http: { connect: true, proxy_auth: { enabled: true, users: [{ name: "bob", password: "pw" }] } } }],
    },
  });
  const chain = { upstream_proxy: upstream.address("upstream"), upstream_proxy_credentials: "bob:pw" };
  const proxying = { forward_proxy: true, connect: true };
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "front", listen: ["127.0.0.1:0"], http: proxying, app: chain },
        { name: "l4", protocol: "tcp", listen: ["127.0.0.1:0"], tcp: { target: `127.0.0.1:${echo.port}` }, app: chain },
        { name: "badauth", listen: ["127.0.0.1:0"], http: proxying, app: { ...chain, upstream_proxy_credentials: "bob:wrong" } },
      ],
    },
  });
  const [front, l4, badauth] = [oxy.port("front"), oxy.port("l4"), oxy.port("badauth")];
  const tunnel = await curl(["-p", "-x", `http://127.0.0.1:${front}`, `http://127.0.0.1:${origin.port}/chained-connect`]);
  assert.equal(tunnel.status, 200, tunnel.stderr);
  const forward = await curl(["-x", `http://127.0.0.1:${front}`, `http://127.0.0.1:${origin.port}/chained-forward`]);
  assert.equal(forward.status, 200, forward.stderr);
  assert.equal(JSON.parse(forward.body).url, "/chained-forward");
  assert.equal((await exchange(l4, "chained l4")).toString(), "chained l4");
  assert.equal(await upstream.metric('oxy_http_routes_total{endpoint="upstream",kind="connect"}'), 3);

  const refused = await curl(["-x", `http://127.0.0.1:${badauth}`, `http://127.0.0.1:${origin.port}/nope`]);
  assert.equal(refused.status, 502);
  assert.match(refused.body, /upstream proxy 127\.0\.0\.1:\d+ refused CONNECT 127\.0\.0\.1:\d+: HTTP\/1\.1 407/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  assert.deepEqual(await upstream.stop(), { code: 0, signal: null });
});
