// Load for the fleet test, run inside the load balancer's namespace (plain node, no
// imports of the test code): HTTP/1.1 requests to HAProxy's frontend from a given source
// address, over keep-alive connections, a new connection each, and CONNECT tunnels (a GET
// to the origin inside each), until SIGTERM or a time limit; then one JSON line: what was
// sent, what came back from which Oxy (the origin's body names it), and the failures.
//
// usage: node fleet-load.mjs FRONTEND_HOST:PORT SOURCE_ADDRESS TUNNEL_TARGET LIMIT_MS
//
// A request that fails on a reused keep-alive connection before any answer came is sent
// again once, as HTTP clients do for idempotent requests (RFC 9112 §9.3.1; the pattern
// Node's http docs give for `request.reusedSocket`): the server may close an idle
// connection just as the next request leaves. Those are counted in `staleRetries`.

import http from "node:http";

const [frontend, source, tunnelTarget, limitMs] = process.argv.slice(2);
const host = frontend.slice(0, frontend.lastIndexOf(":"));
const port = Number(frontend.slice(frontend.lastIndexOf(":") + 1));

const summary = { requests: 0, ok: 0, failed: 0, staleRetries: 0, served: {}, errors: [] };
let running = true;
process.on("SIGTERM", () => (running = false));
setTimeout(() => (running = false), Number(limitMs)).unref();

/** GET `path` through HAProxy on `agent` (false: a new connection, closed after). */
function get(path, agent) {
  return new Promise((ok, fail) => {
    const headers = agent ? {} : { connection: "close" };
    const req = http.request({ host, port, path, agent, localAddress: source, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ status: res.statusCode, body }));
      res.on("close", () => res.complete || fail(new Error("response cut short")));
    });
    req.on("error", (e) => fail(Object.assign(e, { stale: req.reusedSocket && e.code === "ECONNRESET" })));
    req.end();
  });
}

/** CONNECT to the tunnel target through HAProxy, then GET `path` inside the tunnel. */
function tunnel(path) {
  return new Promise((ok, fail) => {
    const req = http.request({ host, port, method: "CONNECT", path: tunnelTarget, agent: false, localAddress: source });
    req.on("connect", (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return fail(new Error(`CONNECT answered ${res.statusCode}`));
      }
      let reply = head.toString("latin1");
      socket.on("data", (d) => (reply += d.toString("latin1")));
      socket.on("error", fail);
      socket.on("end", () => {
        const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(reply)?.[1]);
        ok({ status, body: reply.slice(reply.indexOf("\r\n\r\n") + 4) });
      });
      socket.write(`GET ${path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n`);
    });
    req.on("error", fail);
    req.end();
  });
}

/** Sends requests of one kind one after the other until told to stop. */
async function worker(kind, send) {
  for (let n = 0; running; n++) {
    const path = `/${kind}/${n}`;
    summary.requests++;
    try {
      const answer = await send(path).catch((e) => {
        if (!e.stale) throw e;
        summary.staleRetries++;
        return send(path);
      });
      const oxy = answer.body.split(" ")[0];
      if (answer.status !== 200 || answer.body !== `${oxy} ${path}`) throw new Error(`answered ${answer.status}: ${answer.body.slice(0, 200)}`);
      summary.ok++;
      summary.served[kind] ??= {};
      summary.served[kind][oxy] = (summary.served[kind][oxy] ?? 0) + 1;
    } catch (e) {
      summary.failed++;
      if (summary.errors.length < 20) summary.errors.push(`${path}: ${e.code ?? ""} ${e.message}`);
    }
    // Paced, so that the run stays light (a debug build, origins logging every request).
    await new Promise((ok) => setTimeout(ok, 5));
  }
}

const keepAlive = () => new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: source });
const [a, b] = [keepAlive(), keepAlive()];
await Promise.all([
  worker("keepalive-a", (path) => get(path, a)),
  worker("keepalive-b", (path) => get(path, b)),
  worker("fresh", (path) => get(path, false)),
  worker("tunnel", tunnel),
]);
console.log(JSON.stringify({ event: "summary", ...summary }));
process.exit(0);
