// Per-user limits: `http.proxy_auth.users[].max_tunnels`/`max_requests` and
// `http.user_limits` (for every user, those the application's request hook names too).
// A tunnel or request past its user's limit is answered 429 with `Retry-After` and
// counted in `oxy_http_errors_total{reason="user_limit"}`; a place comes back when its
// tunnel ends. Tunnels are held open on raw sockets; a request is held by the origin's
// `/slow`, which never answers.

import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { after, before, test } from "node:test";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, until } from "../lib/oxy.ts";
import { basicAuth, proxyRequest } from "../lib/proxy-connect.ts";

let echo: EchoServer;
let origin: Origin;
let oxy: OxyProcess;
let app: OxyProcess;

const basic = basicAuth;

before(async () => {
  echo = await startEchoServer();
  origin = await startOrigin();
  const users = [
    { name: "alice", password: "a", max_tunnels: 1, max_requests: 1 },
    { name: "bob", password: "b" },
  ];
  oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        {
          name: "web",
          listen: ["127.0.0.1:0"],
          http: {
            forward_proxy: true,
            connect: true,
            proxy_auth: { enabled: true, users },
            user_limits: { max_tunnels: 2, retry_after: "2500ms" },
            // The held request ends (504) within this after the client goes away.
            client: { response_timeout: "3s" },
          },
        },
      ],
    },
  });
  // The fixture authenticates by itself (any user, one password) and names the user.
  app = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "app", listen: ["127.0.0.1:0"], http: { connect: true, user_limits: { max_tunnels: 1 } }, app: { proxy_password: "p" } }],
    },
  });
});

after(async () => {
  await echo.close();
  await origin.close();
});

/** Sends `head` on a new connection to `port`: the socket and the answer (head, blank
 * line, and a refusal's body), read whole; fails if the connection closes first. */
async function open(port: number, head: string): Promise<{ socket: Socket; head: string }> {
  const reply = await proxyRequest(port, head);
  return { socket: reply.socket, head: `${reply.head}\r\n\r\n${reply.body}` };
}

/** A tunnel as `auth`'s user once the user has a place again (a place comes back just
 * after a tunnel's end is counted): 429s are retried. */
function tunnelWhenFree(port: number, auth: string): Promise<{ socket: Socket; head: string }> {
  return until(async () => {
    const attempt = await open(port, tunnelTo(echo.port, auth));
    if (/^HTTP\/1\.1 200 /.test(attempt.head)) return attempt;
    attempt.socket.destroy();
    return undefined;
  }, "a place for the user");
}

const tunnelTo = (target: number, auth: string) => `CONNECT 127.0.0.1:${target} HTTP/1.1\r\nHost: 127.0.0.1:${target}\r\nProxy-Authorization: ${auth}\r\n\r\n`;

test("a user's tunnels past its own limit are refused 429 with Retry-After; the place comes back when a tunnel ends", async () => {
  const port = oxy.port("web");
  const first = await open(port, tunnelTo(echo.port, basic("alice", "a")));
  assert.match(first.head, /^HTTP\/1\.1 200 /);
  const second = await open(port, tunnelTo(echo.port, basic("alice", "a")));
  assert.match(second.head, /^HTTP\/1\.1 429 /);
  assert.match(second.head, /\r\nretry-after: 3\r\n/i, "2.5 s rounds up to 3");
  assert.match(second.head, /too many tunnels at once for user alice \(limit 1\)/);
  second.socket.destroy();
  await oxy.waitForMetric('oxy_http_errors_total{endpoint="web",reason="user_limit"}', 1);

  first.socket.end();
  await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="web",reason="completed"}', 1);
  const third = await tunnelWhenFree(port, basic("alice", "a"));
  third.socket.end();
  await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="web",reason="completed"}', 2);
});

test("a user without its own limit has http.user_limits'; requests and tunnels are counted apart", async () => {
  const port = oxy.port("web");
  const tunnels = [await open(port, tunnelTo(echo.port, basic("bob", "b"))), await open(port, tunnelTo(echo.port, basic("bob", "b")))];
  for (const t of tunnels) assert.match(t.head, /^HTTP\/1\.1 200 /);
  const third = await open(port, tunnelTo(echo.port, basic("bob", "b")));
  assert.match(third.head, /^HTTP\/1\.1 429 [\s\S]*too many tunnels at once for user bob \(limit 2\)/);
  third.socket.destroy();

  // Alice's one request in flight (the origin never answers /slow) leaves no room for a
  // second; her tunnel is not counted against it.
  const tunnel = await tunnelWhenFree(port, basic("alice", "a"));
  const slow = connect(port, "127.0.0.1");
  slow.write(`GET http://127.0.0.1:${origin.port}/slow HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nProxy-Authorization: ${basic("alice", "a")}\r\n\r\n`);
  await until(() => (origin.seen.some((r) => r.url === "/slow") ? true : undefined), "the slow request at the origin");
  const refused = await open(port, `GET http://127.0.0.1:${origin.port}/fast HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nProxy-Authorization: ${basic("alice", "a")}\r\n\r\n`);
  assert.match(refused.head, /^HTTP\/1\.1 429 [\s\S]*too many requests at once for user alice \(limit 1\)/);
  // Bob's request is his own.
  const bobs = await open(port, `GET http://127.0.0.1:${origin.port}/fast HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nProxy-Authorization: ${basic("bob", "b")}\r\n\r\n`);
  assert.match(bobs.head, /^HTTP\/1\.1 200 /);
  for (const s of [...tunnels.map((t) => t.socket), tunnel.socket, slow, refused.socket, bobs.socket]) s.destroy();
});

test("a user the request hook names is limited by http.user_limits too", async () => {
  const port = app.port("app");
  const carol = await open(port, tunnelTo(echo.port, basic("carol", "p")));
  assert.match(carol.head, /^HTTP\/1\.1 200 /);
  const again = await open(port, tunnelTo(echo.port, basic("carol", "p")));
  assert.match(again.head, /^HTTP\/1\.1 429 [\s\S]*too many tunnels at once for user carol \(limit 1\)/);
  const dave = await open(port, tunnelTo(echo.port, basic("dave", "p")));
  assert.match(dave.head, /^HTTP\/1\.1 200 /);
  for (const s of [carol.socket, again.socket, dave.socket]) s.destroy();
});

test("both exit cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
  assert.deepEqual(await app.stop(), { code: 0, signal: null }, app.logs());
});
