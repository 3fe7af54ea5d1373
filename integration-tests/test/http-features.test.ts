// HTTP proxy features: proxy authentication, WebSocket upgrades through the reverse
// proxy, and request limits (414, 413).

import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { curl } from "../lib/curl.ts";
import { OxyProcess, closed, exchange, openTcp, until } from "../lib/oxy.ts";
import { startEchoServer } from "../lib/echo-server.ts";
import { basicAuth } from "../lib/proxy-connect.ts";
import type { Socket } from "node:net";

let origin: Origin;

before(async () => {
  origin = await startOrigin();
});

after(async () => {
  await origin.close();
});

/** One HTTP endpoint `web` that may reach loopback and forwards absolute-form requests
 * and CONNECT (both off by default); `http` and `more` add settings to it. */
async function endpoint(http: Record<string, any>, binary = "oxy", more: Record<string, any> = {}) {
  const oxy = await OxyProcess.start({
    binary,
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true, connect: true, ...http }, ...more }],
    },
  });
  return { oxy, port: oxy.port("web"), url: oxy.url("web") };
}

test("proxy authentication: 407 with a challenge, then Basic credentials pass", async () => {
  const { oxy, url } = await endpoint({
    proxy_auth: { enabled: true, realm: "test realm", users: [{ name: "alice", password: "s3cret" }] },
  });
  const target = `http://127.0.0.1:${origin.port}/private`;
  const anonymous = await curl(["-D", "-", "-x", url, target]);
  assert.equal(anonymous.status, 407);
  assert.match(anonymous.body.toLowerCase(), /^proxy-authenticate: basic realm="test realm"\r$/m);
  const wrong = await curl(["-x", url, "-U", "alice:nope", target]);
  assert.equal(wrong.status, 407);
  const alice = await curl(["-x", url, "-U", "alice:s3cret", target]);
  assert.equal(alice.status, 200);
  assert.equal(JSON.parse(alice.body).headers["proxy-authorization"], undefined, "credentials never reach the origin");
  const tunnel = await curl(["-p", "-x", url, target]);
  assert.equal(tunnel.ok, false, "CONNECT without credentials fails");
  assert.match(tunnel.stderr, /407/);
  const tunnelOk = await curl(["-p", "-x", url, "-U", "alice:s3cret", target]);
  assert.equal(tunnelOk.status, 200);
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="proxy_auth"}'), 3);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

/** Everything `socket` has received so far, as text. */
function received(socket: Socket): { text: () => string } {
  let data = "";
  socket.on("data", (chunk) => (data += chunk.toString("latin1")));
  return { text: () => data };
}

test("CONNECT as a connection's first request: refused, the connection stays for the next; opened, early data goes first", async () => {
  const { oxy, port } = await endpoint({
    proxy_auth: { enabled: true, realm: "tunnels", users: [{ name: "alice", password: "s3cret" }] },
  });
  const echo = await startEchoServer();
  const target = `127.0.0.1:${echo.port}`;
  const connect = (auth: boolean) =>
    `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n` +
    (auth ? `Proxy-Authorization: ${basicAuth("alice", "s3cret")}\r\n` : "") +
    "\r\n";

  // Refused first (407 with its challenge and body), then opened on the same connection,
  // with bytes sent before the answer.
  const first = await openTcp(port);
  const seen = received(first);
  first.write(connect(false));
  const refusal = await until(() => {
    const text = seen.text();
    const end = text.indexOf("\r\n\r\n");
    const length = Number(/^content-length: *(\d+)/im.exec(text)?.[1] ?? -1);
    return end >= 0 && length >= 0 && text.length >= end + 4 + length ? text : undefined;
  }, "the 407");
  assert.match(refusal, /^HTTP\/1\.1 407 /);
  assert.match(refusal, /^proxy-authenticate: basic realm="tunnels"\r$/im);
  assert.doesNotMatch(refusal, /^connection: close/im, "a refused CONNECT keeps its connection");
  const before = seen.text().length;
  first.write(connect(true) + "early");
  await until(() => (seen.text().slice(before).endsWith("\r\n\r\nearly") ? true : undefined), "the tunnel and its early data");
  assert.match(seen.text().slice(before), /^HTTP\/1\.1 200 OK\r\n/);
  first.write(" late");
  await until(() => (seen.text().endsWith("early late") ? true : undefined), "the tunnel's later data");
  first.destroy();

  // Opened as the first request, its early data in the same write as its head: the
  // answer has a date and no length, and the early data reaches the target first.
  const fresh = await openTcp(port);
  const answer = received(fresh);
  fresh.write(connect(true) + "first bytes");
  const opened = await until(() => (answer.text().endsWith("first bytes") ? answer.text() : undefined), "the tunnel");
  const head = opened.slice(0, opened.indexOf("\r\n\r\n"));
  assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(head, /^date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/m);
  assert.doesNotMatch(head, /content-length|transfer-encoding/i);
  assert.equal(opened.slice(head.length + 4), "first bytes");
  fresh.end();
  await closed(fresh);

  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="proxy_auth"}'), 1);
  assert.equal(echo.connections, 2);
  await echo.close();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("an application replaces proxy authentication with its own in the request hook", async () => {
  const { oxy, url } = await endpoint({}, "fixture-app", { app: { proxy_password: "open sesame" } });
  const target = `http://127.0.0.1:${origin.port}/app-auth`;
  const anonymous = await curl(["-D", "-", "-x", url, target]);
  assert.equal(anonymous.status, 407);
  assert.match(anonymous.body.toLowerCase(), /^proxy-authenticate: basic realm="fixture"\r$/m);
  assert.equal((await curl(["-x", url, "-U", "anyone:open sesame", target])).status, 200);
  assert.equal((await curl(["-p", "-x", url, "-U", "anyone:open sesame", target])).status, 200);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("pipelined HTTP/1.1 requests are answered in order and framed right, hyper taking over at the first with a body", async () => {
  const { oxy, port } = await endpoint({ upstream: `http://127.0.0.1:${origin.port}` });
  const host = `Host: 127.0.0.1:${port}\r\n`;
  // One write: two requests Oxy answers itself, one with a body (hyper's from then on),
  // and one after it; the client then half-closes.
  const reply = (
    await exchange(
      port,
      `GET /one HTTP/1.1\r\n${host}\r\n` +
        `HEAD /two HTTP/1.1\r\n${host}\r\n` +
        `POST /three HTTP/1.1\r\n${host}Content-Length: 5\r\n\r\nhello` +
        `GET /four HTTP/1.1\r\n${host}\r\n`,
    )
  ).toString("latin1");
  const answers: { head: string; body: string }[] = [];
  let rest = reply;
  for (const headOnly of [false, true, false, false]) {
    const end = rest.indexOf("\r\n\r\n");
    assert.ok(end >= 0, `four answers in ${JSON.stringify(reply)}`);
    const head = rest.slice(0, end);
    rest = rest.slice(end + 4);
    let body = "";
    if (headOnly) {
      // No body, whatever the head says.
    } else if (/^transfer-encoding: chunked\r?$/im.test(head)) {
      for (;;) {
        const line = rest.indexOf("\r\n");
        const size = parseInt(rest.slice(0, line), 16);
        assert.equal(rest.slice(line + 2 + size, line + 4 + size), "\r\n", "a chunk ends in CRLF");
        body += rest.slice(line + 2, line + 2 + size);
        rest = rest.slice(line + 4 + size);
        if (size === 0) break;
      }
    } else {
      const length = Number(/^content-length: *(\d+)\r?$/im.exec(head)?.[1]);
      body = rest.slice(0, length);
      rest = rest.slice(length);
    }
    answers.push({ head, body });
  }
  assert.equal(rest, "", "nothing after the fourth answer");
  for (const { head } of answers) assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
  const [one, , three, four] = answers.map(({ body }, i) => (i === 1 ? undefined : JSON.parse(body)));
  assert.deepEqual([one.method, one.url], ["GET", "/one"]);
  assert.deepEqual([three.method, three.url, three.body], ["POST", "/three", "hello"]);
  assert.deepEqual([four.method, four.url], ["GET", "/four"]);
  assert.ok(origin.seen.some((seen) => seen.method === "HEAD" && seen.url === "/two"));

  // A request that asks to close gets the last answer, and the connection closes.
  const socket = await openTcp(port);
  const answer = received(socket);
  socket.write(`GET /five HTTP/1.1\r\n${host}Connection: close\r\n\r\n`);
  await closed(socket);
  assert.match(answer.text(), /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(answer.text(), /^connection: close\r$/im);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a WebSocket upgrade passes through the reverse proxy", async () => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((ok) => wss.on("listening", ok));
  wss.on("connection", (socket, req) => {
    socket.on("message", (data) => socket.send(`echo ${data} via ${req.headers.via}`));
  });
  const wsPort = (wss.address() as { port: number }).port;
  const { oxy, url } = await endpoint({ upstream: `http://127.0.0.1:${wsPort}` });
  const client = new WebSocket(`${url.replace("http", "ws")}/chat`);
  await new Promise((ok, fail) => {
    client.on("open", ok);
    client.on("error", fail);
  });
  client.send("hello");
  const reply = await new Promise<string>((ok) => client.once("message", (d) => ok(d.toString())));
  assert.equal(reply, "echo hello via 1.1 oxy");
  client.send("again");
  assert.equal(await new Promise<string>((ok) => client.once("message", (d) => ok(d.toString()))), "echo again via 1.1 oxy");
  client.close();
  await new Promise((ok) => client.on("close", ok));
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await new Promise((ok) => wss.close(ok));
});

test("limits: long URIs get 414, large bodies 413 (declared or streamed)", async () => {
  const { oxy, port, url } = await endpoint({ limits: { max_uri_bytes: 100, max_body_bytes: 1000 } });
  const target = `http://127.0.0.1:${origin.port}`;
  assert.equal((await curl(["-x", url, `${target}/${"a".repeat(200)}`])).status, 414);
  assert.equal((await curl(["-x", url, "--data-binary", "x".repeat(2000), `${target}/declared`])).status, 413);
  const streamed = await new Promise<number>((ok, fail) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path: `${target}/streamed`, headers: { "transfer-encoding": "chunked" } }, (res) => {
      res.resume();
      ok(res.statusCode ?? 0);
    });
    req.on("error", fail);
    for (let i = 0; i < 10; i++) req.write("y".repeat(500));
    req.end();
  });
  assert.equal(streamed, 413);
  assert.equal((await curl(["-x", url, "--data-binary", "small", `${target}/fits`])).status, 200);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a body tap blocks an upload by a form field mid-stream; clean uploads pass whole", async () => {
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "oxy-upload-"));
  const clean = join(dir, "clean.bin");
  const evil = join(dir, "evil.bin");
  writeFileSync(clean, Buffer.alloc(3 * 1024 * 1024, "a"));
  writeFileSync(evil, Buffer.concat([Buffer.alloc(3 * 1024 * 1024, "a"), Buffer.from("FORBIDDEN-MARKER"), Buffer.alloc(1024, "b")]));

  const { oxy, url } = await endpoint({ upstream: `http://127.0.0.1:${origin.port}` }, "fixture-app", {
    app: { block_form_value: "FORBIDDEN-MARKER" },
  });
  const ok = await curl(["-F", "title=holiday", "-F", `file=@${clean}`, `${url}/upload-clean`]);
  assert.equal(ok.status, 200, ok.body + oxy.logs());
  const seen = origin.seen.find((r) => r.url === "/upload-clean");
  assert.ok(seen && seen.body.length > 3 * 1024 * 1024, "the clean upload arrived whole");

  const blocked = await curl(["-F", "title=holiday", "-F", `file=@${evil}`, `${url}/upload-evil`]);
  assert.equal(blocked.status, 403);
  assert.equal(blocked.body, "field file carries a forbidden value\n");
  assert.ok(!origin.seen.some((r) => r.url === "/upload-evil"), "the blocked upload never completed upstream");

  const form = await curl(["--data-urlencode", "comment=hi FORBIDDEN-MARKER there", `${url}/comment`]);
  assert.equal(form.status, 403);
  assert.equal(await oxy.metric('oxy_http_errors_total{endpoint="web",reason="body_blocked"}'), 2);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("request trailers reach the origin; idle keep-alive connections are closed", async () => {
  const { createServer } = await import("node:http");
  const { connect } = await import("node:net");
  const trailerOrigin = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.end(JSON.stringify(req.trailers)));
  });
  await new Promise<void>((ok) => trailerOrigin.listen(0, "127.0.0.1", ok));
  const originPort = (trailerOrigin.address() as { port: number }).port;
  const { oxy, port } = await endpoint({ limits: { header_read_timeout: "300ms" } });
  const trailers = await new Promise<string>((ok, fail) => {
    const req = request(
      { host: "127.0.0.1", port, method: "POST", path: `http://127.0.0.1:${originPort}/t`, headers: { "transfer-encoding": "chunked", trailer: "x-checksum" } },
      (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => ok(body));
      },
    );
    req.on("error", fail);
    req.write("hello");
    req.addTrailers({ "x-checksum": "abc123" });
    req.end();
  });
  assert.deepEqual(JSON.parse(trailers), { "x-checksum": "abc123" });

  const socket = connect(port, "127.0.0.1");
  await new Promise((ok) => socket.on("connect", ok));
  socket.write(`GET http://127.0.0.1:${originPort}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  await new Promise((ok) => socket.once("data", ok));
  const started = Date.now();
  await new Promise((ok) => socket.on("close", ok));
  const idle = Date.now() - started;
  assert.ok(idle >= 200 && idle < 3_000, `closed after ${idle} ms of idleness`);

  // A head still arriving (a byte at a time, slowloris) is cut off as well, on a new
  // connection and after a request: the bytes do not extend the time.
  for (const afterRequest of [false, true]) {
    const slow = connect(port, "127.0.0.1");
    slow.on("error", () => {});
    await new Promise((ok) => slow.on("connect", ok));
    if (afterRequest) {
      slow.write(`GET http://127.0.0.1:${originPort}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      await new Promise((ok) => slow.once("data", ok));
    }
    const closed = new Promise((ok) => slow.on("close", ok));
    const started = Date.now();
    slow.write("GET / HTTP/1.1\r\nX-Slow: ");
    const trickle = setInterval(() => slow.write("a"), 50);
    await closed;
    clearInterval(trickle);
    const took = Date.now() - started;
    assert.ok(took >= 200 && took < 3_000, `a head still arriving was cut off after ${took} ms (after a request: ${afterRequest})`);
  }
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  trailerOrigin.close();
});

test("a response body tap cuts a response off before the forbidden bytes", async () => {
  const { oxy, port, url } = await endpoint({ upstream: `http://127.0.0.1:${origin.port}` }, "fixture-app", {
    app: { block_response_value: "TOP-SECRET" },
  });
  const clean = await curl(["--data-binary", "harmless", `${url}/echo`]);
  assert.equal(clean.status, 200);
  const payload = `${"x".repeat(100_000)} TOP-SECRET`;
  const received = await new Promise<{ body: string; aborted: boolean }>((ok) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path: "/echo", headers: { "content-length": payload.length } }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ body, aborted: false }));
      res.on("error", () => ok({ body, aborted: true }));
      res.on("aborted", () => ok({ body, aborted: true }));
    });
    req.on("error", () => ok({ body: "", aborted: true }));
    req.end(payload);
  });
  assert.equal(received.aborted, true, "the transfer was cut off");
  assert.doesNotMatch(received.body, /TOP-SECRET/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("a response body tap lets a stream flow: judged bytes go on before the next chunk arrives", { timeout: 30_000 }, async () => {
  const { createServer } = await import("node:http");
  // The origin sends its second event only once the client has the first: a tap that
  // kept a chunk back until the next one would stall this stream for good.
  const first = `data: first event\n\n${" ".repeat(16)}`;
  let clientHasFirst!: () => void;
  const firstArrived = new Promise<void>((ok) => (clientHasFirst = ok));
  const streaming = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write(first);
    firstArrived.then(() => res.end("data: second event\n\n"));
  });
  await new Promise<void>((ok) => streaming.listen(0, "127.0.0.1", ok));
  const streamingPort = (streaming.address() as { port: number }).port;
  const { oxy, port } = await endpoint({ upstream: `http://127.0.0.1:${streamingPort}` }, "fixture-app", {
    app: { block_response_value: "TOP-SECRET" },
  });
  const body = await new Promise<string>((ok, fail) => {
    const req = request({ host: "127.0.0.1", port, path: "/events" }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
        // The tap looks 9 bytes back (its needle is 10 long): the rest has come.
        if (body.includes("data: first event")) clientHasFirst();
      });
      res.on("end", () => ok(body));
      res.on("error", fail);
    });
    req.on("error", fail);
    req.end();
  });
  assert.equal(body, `${first}data: second event\n\n`);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  streaming.close();
});

test("an open CONNECT tunnel keeps its connection's max_connections slot", async () => {
  const { oxy: proxy, port: limited } = await endpoint({}, "oxy", { limits: { max_connections: 1 } });
  const tunnel = await openTcp(limited);
  tunnel.write(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const answer = await new Promise<string>((ok) => tunnel.once("data", (d) => ok(d.toString())));
  assert.match(answer, /^HTTP\/1\.1 200 /);
  await proxy.waitForMetric('oxy_tunnel_active{endpoint="web",protocol="tcp"}', 1);
  const second = await openTcp(limited);
  await closed(second);
  await proxy.waitForMetric('oxy_connections_rejected_total{endpoint="web",reason="max_connections"}', 1);
  tunnel.destroy();
  await proxy.waitForMetric('oxy_tunnel_active{endpoint="web",protocol="tcp"}', 0);
  const third = await curl(["-x", `http://127.0.0.1:${limited}`, `http://127.0.0.1:${origin.port}/after`]);
  assert.equal(third.status, 200);
  assert.deepEqual(await proxy.stop(), { code: 0, signal: null });
});

/** Resolves once `socket` has received `text` from now on; fails if it closes first. */
function receives(socket: import("node:net").Socket, text: string): Promise<void> {
  return new Promise((ok, fail) => {
    if (socket.destroyed) return fail(new Error(`the connection closed before ${JSON.stringify(text)} could arrive`));
    let got = "";
    const onData = (data: Buffer) => {
      got += data.toString("latin1");
      if (got.includes(text)) {
        socket.off("data", onData);
        socket.off("close", onClose);
        ok();
      }
    };
    const onClose = () => fail(new Error(`the connection closed before ${JSON.stringify(text)} arrived`));
    socket.on("data", onData);
    socket.once("close", onClose);
  });
}

test("an upload outlasting its response keeps its HTTP/1.1 connection; draining, a head that never completes still times out", async () => {
  const { createServer } = await import("node:http");
  const { connect } = await import("node:net");
  // The origin answers as soon as a request starts, and reads its body afterwards.
  const early = createServer((req, res) => {
    res.end("early");
    req.resume();
  });
  await new Promise<void>((ok) => early.listen(0, "127.0.0.1", ok));
  const earlyPort = (early.address() as { port: number }).port;
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      server: { shutdown_timeout: "20s" },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true, limits: { header_read_timeout: "2500ms" } } }],
    },
  });
  const port = oxy.port("web");

  const upload = connect(port, "127.0.0.1");
  upload.on("error", () => {});
  await new Promise((ok) => upload.on("connect", ok));
  const answered = receives(upload, "early");
  upload.write(`POST http://127.0.0.1:${earlyPort}/up HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n`);
  await answered;
  // The body goes on arriving for longer than header_read_timeout after the response.
  for (let chunk = 0; chunk < 12; chunk++) {
    upload.write("1\r\na\r\n");
    await new Promise((ok) => setTimeout(ok, 250));
  }
  upload.write("0\r\n\r\n");
  const again = receives(upload, "early");
  upload.write(`GET http://127.0.0.1:${earlyPort}/again HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  await again;
  upload.destroy();
  // Only the next connection is open when the drain starts.
  await oxy.waitForMetric('oxy_connections_active{endpoint="web"}', 0);

  // Draining, hyper's graceful close leaves a connection whose first head is still
  // arriving open: header_read_timeout ends it, not the drain period.
  const slow = connect(port, "127.0.0.1");
  slow.on("error", () => {});
  await new Promise((ok) => slow.on("connect", ok));
  const slowClosed = new Promise((ok) => slow.on("close", ok));
  slow.write("GET / HTTP/1.1\r\nX-Slow: ");
  await oxy.waitForMetric('oxy_connections_active{endpoint="web"}', 1);
  const started = Date.now();
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await slowClosed;
  const took = Date.now() - started;
  assert.ok(took < 10_000, `the drain waited ${took} ms for a head that never completed`);
  assert.doesNotMatch(oxy.logs(), /drain period over/);
  early.close();
});
