// Upstream connections under an egress hook: the hook runs for every forwarded request,
// and requests it sends the same way, for the same client and proxy user, share pooled
// connections (`oxy_http_egress_connections_total{kind="new"|"reused"}`); another user
// gets a connection of its own; `http.client.pool_max_idle_per_upstream: 0` keeps none.
// Without a hook, upstreams use the same pool, by target and scheme: an HTTPS origin
// that offers HTTP/2 gets one connection, which concurrent requests share; one that
// speaks HTTP/1.1 alone gets its connections reused; an upgrade gets an HTTP/1.1
// connection of its own; requests that find no connection wait for the one being made
// while it may be HTTP/2; a pooled HTTP/2 connection is checked with PINGs while idle,
// and a request it refused unprocessed is sent again when it has no body.
// Each worker thread keeps a pool of its own (`server.scheduling: per_thread`, the
// default), and the threads share new connections evenly; the tests that count upstream
// connections run one thread, so that every request finds the same pool.

import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, test } from "node:test";
import { readFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import { makePki } from "../lib/certs.ts";
import { curl } from "../lib/curl.ts";
import { startHttpsOrigin } from "../lib/https-origin.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, openTcp, until } from "../lib/oxy.ts";
import { proxyConnect } from "../lib/proxy-connect.ts";

let origin: Origin;

before(async () => {
  origin = await startOrigin();
});

after(async () => {
  await origin.close();
});

/** One worker thread: one upstream pool, whichever connection a request comes on. */
const oneThread = { worker_threads: 1 };

const connections = (oxy: OxyProcess, kind: string) => oxy.metric(`oxy_http_egress_connections_total{endpoint="web",kind="${kind}"}`);

/** Waits until the pool holds `n` idle connections (a connection goes back once its
 * response is done, just after the client has it). */
const idle = (oxy: OxyProcess, n: number) => oxy.waitForMetric('oxy_http_egress_idle_connections{endpoint="web"}', n);

test("requests the egress hook routes alike reuse one upstream connection; the hook still sees each", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true } }],
    },
  });
  for (let i = 0; i < 3; i++) {
    const r = await curl(["-x", oxy.url("web"), `http://127.0.0.1:${origin.port}/pooled-${i}`]);
    assert.equal(r.status, 200, r.stderr);
    await idle(oxy, 1);
  }
  const seen = origin.seen.filter((r) => r.url.startsWith("/pooled-"));
  assert.equal(seen.length, 3);
  assert.equal(new Set(seen.map((r) => r.remotePort)).size, 1, `one upstream connection: ${JSON.stringify(seen.map((r) => r.remotePort))}`);
  assert.equal(await connections(oxy, "new"), 1);
  assert.equal(await connections(oxy, "reused"), 2);
  const hookRuns = oxy.logs().match(/fixture egress on its connection.*purpose=HttpRequest/g) ?? [];
  assert.equal(hookRuns.length, 3, "the egress hook ran for every request");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("another proxy user gets a connection of its own", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true }, app: { proxy_password: "pw" } }],
    },
  });
  for (const [user, idleAfter] of [["alice", 1], ["alice", 1], ["bob", 2]] as const) {
    const r = await curl(["-x", oxy.url("web"), "-U", `${user}:pw`, `http://127.0.0.1:${origin.port}/user-${user}`]);
    assert.equal(r.status, 200, r.stderr);
    await idle(oxy, idleAfter);
  }
  const port = (user: string) => new Set(origin.seen.filter((r) => r.url === `/user-${user}`).map((r) => r.remotePort));
  assert.equal(port("alice").size, 1, "alice's two requests share a connection");
  assert.ok(![...port("bob")].some((p) => port("alice").has(p)), "bob's request does not ride alice's connection");
  assert.equal(await connections(oxy, "new"), 2);
  assert.equal(await connections(oxy, "reused"), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

/** An HTTPS origin that speaks HTTP/1.1 alone (no ALPN), answering `h1 1.1` once
 * `answering` (when a test sets it) has settled, and counts its TLS handshakes; idle
 * connections stay open for a test's length, not Node's 5 s. */
async function startHttp1Origin(pki: { server: { chain: string; key: string } }) {
  const origin = { port: 0, handshakes: 0, answering: undefined as Promise<void> | undefined, close: () => server.close() };
  const server = createHttpsServer({ cert: readFileSync(pki.server.chain), key: readFileSync(pki.server.key) }, (req, res) => {
    req.resume();
    req.on("end", async () => {
      await origin.answering;
      res.end(`h1 ${req.httpVersion}`);
    });
  });
  server.on("secureConnection", () => origin.handshakes++);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  origin.port = (server.address() as net.AddressInfo).port;
  return origin;
}

test("without a hook, HTTPS upstreams are pooled: an HTTP/2 connection is shared by concurrent requests (the client's Host as its :authority), HTTP/1.1 ones are reused", async () => {
  const pki = makePki();
  const h2Origin = await startHttpsOrigin(pki.server);
  const h1Origin = await startHttp1Origin(pki);
  const h1Port = h1Origin.port;
  const client = { ca_file: pki.ca };
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "h2", listen: ["127.0.0.1:0"], http: { upstream: `https://127.0.0.1:${h2Origin.port}`, client } },
        { name: "h1", listen: ["127.0.0.1:0"], http: { upstream: `https://127.0.0.1:${h1Port}`, client } },
      ],
    },
  });
  const count = (endpoint: string, kind: string) => oxy.metric(`oxy_http_egress_connections_total{endpoint="${endpoint}",kind="${kind}"}`);

  // The first request makes the connection; five at once then share it.
  assert.equal((await curl([`${oxy.url("h2")}/first`])).status, 200);
  const answers = await Promise.all([0, 1, 2, 3, 4].map((i) => curl([`${oxy.url("h2")}/shared-${i}`])));
  assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200, 200]);
  assert.deepEqual(h2Origin.seen.map((r) => r.httpVersion), Array(6).fill("2.0"));
  // The host the client asked for is the :authority, as it is the Host over HTTP/1.1;
  // no Host header contradicts it (nginx refuses such a request).
  const asked = `127.0.0.1:${oxy.port("h2")}`;
  assert.deepEqual(h2Origin.seen.map((r) => [r.authority, r.headers.host]), Array(6).fill([asked, undefined]));
  assert.equal(h2Origin.handshakes, 1, "one TLS connection to the HTTP/2 origin");
  assert.equal(await count("h2", "new"), 1);
  assert.equal(await count("h2", "reused"), 5);

  // An upgrade takes an HTTP/1.1 connection of its own, though the origin offers h2.
  const upgrade = await curl(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket", `${oxy.url("h2")}/upgrade`]);
  assert.equal(upgrade.status, 200, upgrade.body);
  const upgraded = h2Origin.seen.find((r) => r.path === "/upgrade");
  assert.deepEqual([upgraded?.httpVersion, upgraded?.alpnProtocol, upgraded?.headers.upgrade], ["1.1", "http/1.1", "websocket"]);
  assert.equal(h2Origin.handshakes, 2);
  assert.equal(await count("h2", "new"), 2);

  for (const path of ["/one", "/two", "/three"]) {
    const r = await curl([`${oxy.url("h1")}${path}`]);
    assert.equal(r.body, "h1 1.1");
    await oxy.waitForMetric('oxy_http_egress_idle_connections{endpoint="h1"}', 1);
  }
  assert.equal(h1Origin.handshakes, 1, "one TLS connection to the HTTP/1.1 origin");
  assert.equal(await count("h1", "new"), 1);
  assert.equal(await count("h1", "reused"), 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await h2Origin.close();
  h1Origin.close();
});

/** A TCP relay to 127.0.0.1:`port` that the test steers. `frozen`, it drops what either
 * side sends and keeps both sockets open, as a lost NAT mapping would. Holding, it
 * accepts connections and leaves them unread, unconnected, until `release` (or
 * `dropHeld`, which closes them). */
async function startRelay(port: number) {
  const held: { start: () => void; socket: net.Socket }[] = [];
  const relay = {
    port: 0,
    accepted: 0,
    chunksFromOxy: 0,
    closedByOxy: 0,
    frozen: false,
    holding: false,
    release() {
      relay.holding = false;
      for (const connection of held.splice(0)) connection.start();
    },
    dropHeld() {
      for (const connection of held.splice(0)) connection.socket.destroy();
    },
    close() {
      server.close();
    },
  };
  const server = net.createServer((fromOxy) => {
    relay.accepted++;
    fromOxy.on("error", () => {});
    fromOxy.on("close", () => relay.closedByOxy++);
    const start = () => {
      const toOrigin = net.connect(port, "127.0.0.1");
      toOrigin.on("error", () => {});
      fromOxy.on("data", (chunk) => {
        relay.chunksFromOxy++;
        if (!relay.frozen) toOrigin.write(chunk);
      });
      toOrigin.on("data", (chunk) => {
        if (!relay.frozen) fromOxy.write(chunk);
      });
      fromOxy.on("close", () => toOrigin.destroy());
      toOrigin.on("close", () => fromOxy.destroy());
    };
    if (relay.holding) held.push({ start, socket: fromOxy });
    else start();
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  relay.port = (server.address() as net.AddressInfo).port;
  return relay;
}

test("requests that find no connection wait for the one being made: shared when it is HTTP/2, its error when it fails; an HTTP/1.1 one lets them make their own", async () => {
  const pki = makePki();
  const h2Origin = await startHttpsOrigin(pki.server);
  const h1Origin = await startHttp1Origin(pki);
  const toH2 = await startRelay(h2Origin.port);
  const toFailing = await startRelay(h2Origin.port);
  const toH1 = await startRelay(h1Origin.port);
  const client = { ca_file: pki.ca };
  const endpoint = (name: string, port: number) => ({ name, listen: ["127.0.0.1:0"], http: { upstream: `https://127.0.0.1:${port}`, client } });
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [endpoint("h2", toH2.port), endpoint("failing", toFailing.port), endpoint("h1", toH1.port)],
    },
  });
  const count = (name: string, kind: string) => oxy.metric(`oxy_http_egress_connections_total{endpoint="${name}",kind="${kind}"}`);
  /** Sends `n` requests at once while the relay holds the first connection, and waits
   * until every request is in Oxy and the first connection has reached the relay; the
   * answers come in an object, which `await` does not wait for. */
  const burst = async (name: string, relay: Awaited<ReturnType<typeof startRelay>>, n: number) => {
    relay.holding = true;
    const answers = Promise.all(Array.from({ length: n }, (_, i) => curl([`${oxy.url(name)}/burst-${i}`])));
    await oxy.waitForMetric(`oxy_http_active_requests{endpoint="${name}"}`, n);
    await until(() => (relay.accepted === 1 ? true : undefined), "the first connection at the relay");
    return { answers };
  };
  try {
    // HTTP/2: one connection for all six (RFC 9113 §9.1).
    const together = await burst("h2", toH2, 6);
    toH2.release();
    assert.deepEqual((await together.answers).map((a) => a.status), Array(6).fill(200));
    assert.equal(toH2.accepted, 1);
    assert.equal(h2Origin.handshakes, 1);
    assert.equal(await count("h2", "new"), 1);
    assert.equal(await count("h2", "reused"), 5);

    // The connection fails: every waiting request hears it at once, none tries again.
    const failing = await burst("failing", toFailing, 4);
    toFailing.dropHeld();
    assert.deepEqual((await failing.answers).map((a) => a.status), Array(4).fill(502));
    assert.equal(toFailing.accepted, 1);
    assert.equal(await count("failing", "new"), 1);

    // HTTP/1.1 (no ALPN): the waiting requests then make connections of their own, while
    // the first request's exchange goes on. The origin answers only once they have: a
    // first exchange that ended before the waiting requests looked again would give one
    // of them its connection, idle by then, as it should.
    let answer = () => {};
    h1Origin.answering = new Promise((ok) => (answer = ok));
    const apart = await burst("h1", toH1, 3);
    toH1.release();
    // Held again: the two waiting requests connect at once, not one after the other.
    toH1.holding = true;
    await until(() => (toH1.accepted === 3 ? true : undefined), "both other connections at the relay");
    toH1.release();
    answer();
    assert.deepEqual((await apart.answers).map((a) => a.body), Array(3).fill("h1 1.1"));
    assert.equal(h1Origin.handshakes, 3);
    assert.equal(await count("h1", "new"), 3);
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    for (const relay of [toH2, toFailing, toH1]) relay.close();
    await h2Origin.close();
    h1Origin.close();
  }
});

test("a pooled HTTP/2 upstream connection is checked with PINGs while idle: kept while they are answered, closed when they are not, and the next request opens another", async () => {
  const pki = makePki();
  const h2Origin = await startHttpsOrigin(pki.server);
  const relayed = await startRelay(h2Origin.port);
  const relayPort = relayed.port;
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        {
          name: "web",
          listen: ["127.0.0.1:0"],
          http: {
            upstream: `https://127.0.0.1:${relayPort}`,
            client: { ca_file: pki.ca, h2_keep_alive_interval: "100ms", h2_keep_alive_timeout: "2s", pool_idle_timeout: "60s" },
          },
        },
      ],
    },
  });
  try {
    assert.equal((await curl([`${oxy.url("web")}/first`])).status, 200);
    // Idle, the connection carries PINGs, which the origin answers: it stays, and the
    // next request takes it.
    const afterFirst = relayed.chunksFromOxy;
    await until(() => (relayed.chunksFromOxy >= afterFirst + 3 ? true : undefined), "PINGs on the idle connection");
    assert.equal((await curl([`${oxy.url("web")}/second`])).status, 200);
    assert.equal(await connections(oxy, "new"), 1);
    assert.equal(await connections(oxy, "reused"), 1);
    assert.equal(relayed.closedByOxy, 0);

    // Frozen, the PINGs go unanswered: Oxy closes the connection on its own, without a
    // request having to fail on it first.
    relayed.frozen = true;
    await until(() => (relayed.closedByOxy === 1 ? true : undefined), "Oxy to close the unanswered connection", 15_000);
    relayed.frozen = false;
    const third = await curl([`${oxy.url("web")}/third`]);
    assert.equal(third.status, 200, third.stderr);
    assert.equal(await connections(oxy, "new"), 2);
    assert.equal(h2Origin.handshakes, 2);
    assert.deepEqual(h2Origin.seen.map((r) => r.path), ["/first", "/second", "/third"]);
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    relayed.close();
    await h2Origin.close();
  }
});

test("a request an HTTP/2 upstream refuses unprocessed (graceful GOAWAY, REFUSED_STREAM) is sent again once if it has no body; one with a body is not", async () => {
  const pki = makePki();
  // Counts each path's arrivals and each TLS handshake; the behaviour is the path's.
  const arrivals = new Map<string, number>();
  let handshakes = 0;
  let held: http2.ServerHttp2Stream | undefined;
  const origin = http2.createSecureServer({ cert: readFileSync(pki.server.chain), key: readFileSync(pki.server.key) });
  origin.on("secureConnection", () => handshakes++);
  origin.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    const path = String(headers[":path"]);
    const n = (arrivals.get(path) ?? 0) + 1;
    arrivals.set(path, n);
    const answer = () => {
      stream.respond({ ":status": 200 });
      stream.end(`${path} ${n}`);
    };
    if (path === "/hold") {
      held = stream;
    } else if (path === "/goaway" && n === 1 && held) {
      // A graceful GOAWAY that accepted streams up to the held one: this one was not
      // processed (nginx sends this after `keepalive_requests` on a connection).
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, held.id);
    } else if ((path === "/refused-once" && n === 1) || path.startsWith("/refused-always")) {
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    } else {
      stream.resume();
      stream.on("end", answer);
    }
  });
  await new Promise<void>((ok) => origin.listen(0, "127.0.0.1", ok));
  const port = (origin.address() as net.AddressInfo).port;
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { upstream: `https://127.0.0.1:${port}`, client: { ca_file: pki.ca } } }],
    },
  });
  try {
    const get = async (path: string, extra: string[] = []) => {
      const r = await curl([...extra, `${oxy.url("web")}${path}`]);
      return `${r.status} ${r.body}`;
    };
    assert.equal(await get("/first"), "200 /first 1");
    // A stream reset with REFUSED_STREAM is sent again, on the same connection.
    assert.equal(await get("/refused-once"), "200 /refused-once 2");
    assert.equal(handshakes, 1);
    // Refused again, it fails: once more at most, not until the upstream takes it.
    assert.equal((await get("/refused-always")).split(" ")[0], "502");
    assert.equal(arrivals.get("/refused-always"), 2);
    // A request with a body is not sent again: its body is gone.
    assert.equal((await get("/refused-always-post", ["--data-binary", "payload"])).split(" ")[0], "502");
    assert.equal(arrivals.get("/refused-always-post"), 1);

    // A graceful GOAWAY below a request's stream: the request goes out again on a new
    // connection, and so do the requests after it; the held stream still completes on
    // the old one.
    const hold = get("/hold");
    await until(() => held, "the held request at the origin");
    assert.equal(await get("/goaway"), "200 /goaway 2");
    assert.equal(await get("/after"), "200 /after 1");
    assert.equal(handshakes, 2);
    held?.respond({ ":status": 200 });
    held?.end("held");
    assert.equal(await hold, "200 held");
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    origin.close();
  }
});

test("http.client.pool_max_idle_per_upstream: 0 keeps no connection: each request opens its own", async () => {
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      server: oneThread,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true, client: { pool_max_idle_per_upstream: 0 } } },
      ],
    },
  });
  for (let i = 0; i < 3; i++) {
    const r = await curl(["-x", oxy.url("web"), `http://127.0.0.1:${origin.port}/unpooled-${i}`]);
    assert.equal(r.status, 200, r.stderr);
  }
  const seen = origin.seen.filter((r) => r.url.startsWith("/unpooled-"));
  assert.equal(new Set(seen.map((r) => r.remotePort)).size, 3, `three upstream connections: ${JSON.stringify(seen.map((r) => r.remotePort))}`);
  assert.equal(await connections(oxy, "new"), 3);
  assert.equal(await connections(oxy, "reused"), undefined, "no request was counted as reused");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

/** The zero-code proxy (no hooks) in front of a plain-HTTP upstream on `port`. */
const reverseProxy = (port: number, server: Record<string, any> = oneThread) =>
  OxyProcess.start({
    binary: "oxy",
    settings: {
      server,
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { upstream: `http://127.0.0.1:${port}` } }],
    },
  });

test("without an egress hook, a plain-HTTP upstream's requests share one pooled connection", async () => {
  const oxy = await reverseProxy(origin.port);
  for (let i = 0; i < 3; i++) {
    const r = await curl([`${oxy.url("web")}/direct-${i}`]);
    assert.equal(r.status, 200, r.stderr);
    await idle(oxy, 1);
  }
  const seen = origin.seen.filter((r) => r.url.startsWith("/direct-"));
  assert.equal(seen.length, 3);
  assert.equal(new Set(seen.map((r) => r.remotePort)).size, 1, `one upstream connection: ${JSON.stringify(seen.map((r) => r.remotePort))}`);
  assert.equal(await connections(oxy, "new"), 1);
  assert.equal(await connections(oxy, "reused"), 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("an upstream that closes each connection after its response: every request still succeeds, on a new connection", async () => {
  // Answers keep-alive (no `Connection: close`), then closes: the pooled connection is
  // dead by the next request, which must go out on another one.
  let accepted = 0;
  const closing = net.createServer((socket) => {
    accepted++;
    socket.once("data", () => socket.end("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  });
  await new Promise<void>((resolve) => closing.listen(0, "127.0.0.1", resolve));
  const port = (closing.address() as net.AddressInfo).port;
  const oxy = await reverseProxy(port);
  try {
    for (let i = 0; i < 5; i++) {
      const r = await curl([`${oxy.url("web")}/closing-${i}`]);
      assert.equal(r.status, 200, r.stderr);
      assert.equal(r.body, "ok");
    }
    assert.equal(accepted, 5, "each request had a connection of its own");
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    closing.close();
  }
});

test("an idle upstream connection its origin closes leaves the pool at once; a GET whose pooled connection closes unanswered goes out again, a POST does not", async () => {
  // Each connection answers its first request (keep-alive). On its second, the first
  // closes unanswered; the others close on a word from the test.
  const sockets: net.Socket[] = [];
  const closing = net.createServer((socket) => {
    const first = sockets.length === 0;
    sockets.push(socket);
    let requests = 0;
    socket.on("data", () => {
      requests++;
      if (requests === 1) socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      else if (first) socket.destroy();
    });
  });
  await new Promise<void>((resolve) => closing.listen(0, "127.0.0.1", resolve));
  const port = (closing.address() as net.AddressInfo).port;
  const oxy = await reverseProxy(port);
  try {
    assert.equal((await curl([`${oxy.url("web")}/first`])).status, 200);
    await idle(oxy, 1);
    // The first connection closes on this request without a byte of answer: the GET
    // goes out again, on a new connection.
    const again = await curl([`${oxy.url("web")}/again`]);
    assert.equal(again.status, 200, again.stderr);
    assert.equal(sockets.length, 2);
    await idle(oxy, 1);

    // The origin closes the idle connection: it leaves the pool without waiting for a
    // request or the pool's sweep (a minute and a half away).
    sockets[1].end();
    await idle(oxy, 0);
    assert.equal((await curl([`${oxy.url("web")}/third`])).status, 200);
    assert.equal(sockets.length, 3);
    await idle(oxy, 1);

    // A POST (no body) on a connection that closes unanswered is not sent again.
    sockets.splice(0, sockets.length, sockets[2]);
    sockets[0].on("data", () => sockets[0].destroy());
    const post = await curl(["-X", "POST", `${oxy.url("web")}/once`]);
    assert.equal(post.status, 502, post.stderr);
    assert.equal(sockets.length, 1, "no second connection for the POST");
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  } finally {
    closing.close();
  }
});

test("server.scheduling: per_thread (the default): each thread reuses the upstream connections it made", async () => {
  const oxy = await reverseProxy(origin.port, { worker_threads: 2 });
  // Each curl is a client connection of its own, accepted by either thread.
  for (let i = 0; i < 6; i++) {
    const r = await curl([`${oxy.url("web")}/per-thread-${i}`]);
    assert.equal(r.status, 200, r.stderr);
    // Every connection made is back in its thread's pool before the next request.
    await idle(oxy, (await connections(oxy, "new")) ?? 0);
  }
  const made = (await connections(oxy, "new")) ?? 0;
  assert.ok(made >= 1 && made <= 2, `at most one upstream connection per thread, not ${made}`);
  assert.equal(await connections(oxy, "reused"), 6 - made);
  // One client connection stays on one thread: its requests share one upstream connection.
  const urls = [0, 1, 2].map((i) => `${oxy.url("web")}/one-connection-${i}`);
  const r = await curl(urls);
  assert.equal(r.status, 200, r.stderr);
  const seen = origin.seen.filter((q) => q.url.startsWith("/one-connection-"));
  assert.equal(seen.length, 3);
  assert.equal(new Set(seen.map((q) => q.remotePort)).size, 1, JSON.stringify(seen.map((q) => q.remotePort)));
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("server.scheduling: work_stealing: the threads share one pool: requests on six client connections reuse one upstream connection", async () => {
  const oxy = await reverseProxy(origin.port, { scheduling: "work_stealing", worker_threads: 2 });
  for (let i = 0; i < 6; i++) {
    const r = await curl([`${oxy.url("web")}/work-stealing-${i}`]);
    assert.equal(r.status, 200, r.stderr);
    await idle(oxy, 1);
  }
  const seen = origin.seen.filter((q) => q.url.startsWith("/work-stealing-"));
  assert.equal(new Set(seen.map((q) => q.remotePort)).size, 1, JSON.stringify(seen.map((q) => q.remotePort)));
  assert.equal(await connections(oxy, "new"), 1);
  assert.equal(await connections(oxy, "reused"), 5);
  // No per-thread runtime runs.
  assert.equal(await oxy.metric('oxy_per_thread_connections{thread="0"}'), undefined);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

/** One keep-alive request on `socket`; resolves with the response's status line. */
const statusLine = (socket: net.Socket, path: string) =>
  new Promise<string>((resolve, reject) => {
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      if (head.includes("\r\n\r\n")) {
        socket.off("data", onData);
        resolve(head.slice(0, head.indexOf("\r\n")));
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: web\r\n\r\n`);
  });

test("server.scheduling: per_thread: connections opened at once are shared evenly by the threads", async () => {
  const oxy = await reverseProxy(origin.port, { worker_threads: 2 });
  const perThread = (thread: number) => oxy.metric(`oxy_per_thread_connections{thread="${thread}"}`);
  const { port } = new URL(oxy.url("web"));
  // A burst wakes both threads in accept; without balancing, the first to run takes
  // all of it.
  const sockets = await Promise.all(Array.from({ length: 8 }, () => openTcp(Number(port))));
  try {
    // Every connection is served, the moved ones too.
    const lines = await Promise.all(sockets.map((socket, i) => statusLine(socket, `/balanced-${i}`)));
    assert.deepEqual(lines, Array(8).fill("HTTP/1.1 200 OK"));
    const counts = [await perThread(0), await perThread(1)];
    assert.equal((counts[0] ?? 0) + (counts[1] ?? 0), 8, JSON.stringify(counts));
    // Two threads placing at the same instant can both pick the same one.
    assert.ok(counts.every((n) => n !== undefined && n >= 3), `each thread serves 3 or more of 8: ${JSON.stringify(counts)}`);
  } finally {
    for (const socket of sockets) socket.destroy();
  }
  await oxy.waitForMetric('oxy_per_thread_connections{thread="0"}', 0);
  await oxy.waitForMetric('oxy_per_thread_connections{thread="1"}', 0);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("server.scheduling: per_thread: a CONNECT tunnel stays counted on its thread after its connection's HTTP ends", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      server: { worker_threads: 2 },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "proxy", listen: ["127.0.0.1:0"], http: { connect: true } }],
    },
  });
  const serving = async () =>
    ((await oxy.metric('oxy_per_thread_connections{thread="0"}')) ?? 0) + ((await oxy.metric('oxy_per_thread_connections{thread="1"}')) ?? 0);
  const reply = await proxyConnect(Number(new URL(oxy.url("proxy")).port), `127.0.0.1:${origin.port}`);
  assert.equal(reply.status, 200, reply.body);
  try {
    // A round trip through the tunnel: hyper's side of the connection ended at the upgrade.
    assert.equal(await statusLine(reply.socket, "/through-the-tunnel"), "HTTP/1.1 200 OK");
    assert.equal(await serving(), 1, "the tunnel keeps its connection's place");
  } finally {
    reply.socket.destroy();
  }
  await until(async () => ((await serving()) === 0 ? true : undefined), "the place given back");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

