// Contexts that connect: what the ingress hook keeps for a connection (`cx.app`) is
// reached by the request, egress and tunnel hooks of that connection as
// `cx.connection`, with the connection's id; what the egress hook keeps for a tunnel
// (`cx.app`) is the tunnel hook's. The fixture app's ingress hook stores the
// client's address and a request counter; its request hook counts and answers `/hello`
// with both and the id; its egress and tunnel hooks log them. One raw HTTP/1.1
// connection sends two requests and then a CONNECT; a second connection has its own id
// and count.

import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { after, before, test } from "node:test";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { OxyProcess } from "../lib/oxy.ts";

let oxy: OxyProcess;
let echo: EchoServer;

before(async () => {
  echo = await startEchoServer();
  oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "web", listen: ["127.0.0.1:0"], http: { connect: true }, app: { respond_path: "/hello" } },
        // Looks inside every tunnel: the HTTP inside is the CONNECT user's.
        {
          name: "inspect",
          listen: ["127.0.0.1:0"],
          http: { connect: true, forward_proxy: true, proxy_auth: { enabled: true, users: [{ name: "alice", password: "a" }] } },
          app: { respond_path: "/hello", tunnel_decapsulate: true },
        },
      ],
    },
  });
});

after(async () => {
  await echo.close();
});

/** A client connection that reads one response head (and its body) at a time. */
class Client {
  private buffer = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  private closed = false;
  private constructor(readonly socket: Socket) {
    socket.on("data", (d) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      this.waiting?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.waiting?.();
    });
  }

  static open(port: number): Promise<Client> {
    return new Promise((ok, fail) => {
      const socket = connect(port, "127.0.0.1", () => ok(new Client(socket)));
      socket.once("error", fail);
    });
  }

  /** Waits until `ready` finds what it needs in the buffer; returns what it returns. */
  private async until<T>(ready: () => T | undefined): Promise<T> {
    for (;;) {
      const found = ready();
      if (found !== undefined) return found;
      if (this.closed) throw new Error(`closed; buffer: ${this.buffer}`);
      await new Promise<void>((ok) => (this.waiting = ok));
    }
  }

  /** Sends `head` and reads one response: its status, headers and body (by content-length). */
  async request(head: string): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    this.socket.write(head);
    return this.until(() => {
      const end = this.buffer.indexOf("\r\n\r\n");
      if (end < 0) return undefined;
      const lines = this.buffer.subarray(0, end).toString().split("\r\n");
      const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      const length = Number(headers["content-length"] ?? 0);
      if (this.buffer.length < end + 4 + length) return undefined;
      const body = this.buffer.subarray(end + 4, end + 4 + length).toString();
      this.buffer = this.buffer.subarray(end + 4 + length);
      return { status: Number(lines[0].split(" ")[1]), headers, body };
    });
  }

  /** Reads `count` bytes. */
  async read(count: number): Promise<string> {
    return this.until(() => {
      if (this.buffer.length < count) return undefined;
      const out = this.buffer.subarray(0, count).toString();
      this.buffer = this.buffer.subarray(count);
      return out;
    });
  }
}

const hello = "GET /hello HTTP/1.1\r\nHost: oxy.test\r\n\r\n";

test("the request, egress and tunnel hooks reach the state the ingress hook kept for their connection", async () => {
  const first = await Client.open(oxy.port("web"));
  const one = await first.request(hello);
  const two = await first.request(hello);
  assert.equal(one.status, 200, one.body);
  assert.equal(one.body.trimEnd(), "hello from the fixture app");
  const id = one.headers["x-connection-id"];
  assert.match(id, /^\d+$/);
  assert.equal(two.headers["x-connection-id"], id, "one connection, one id");
  assert.equal(one.headers["x-connection-client"], `127.0.0.1:${first.socket.localPort}`, "the ingress hook's state");
  assert.deepEqual([one.headers["x-connection-requests"], two.headers["x-connection-requests"]], ["1", "2"]);

  // Another connection: its own id and its own count.
  const second = await Client.open(oxy.port("web"));
  const other = await second.request(hello);
  assert.notEqual(other.headers["x-connection-id"], id);
  assert.equal(other.headers["x-connection-requests"], "1");
  assert.equal(other.headers["x-connection-client"], `127.0.0.1:${second.socket.localPort}`);
  second.socket.destroy();

  // A CONNECT on the first connection: the egress and tunnel hooks see it too (the
  // CONNECT request is its third).
  const connected = await first.request(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`);
  assert.equal(connected.status, 200);
  first.socket.write("ping");
  assert.equal(await first.read(4), "ping");
  await oxy.waitForLog(new RegExp(`fixture egress on its connection connection=${id} client=127\\.0\\.0\\.1:${first.socket.localPort} purpose=Tunnel`));
  // The tunnel hook sees the state the egress hook left for this tunnel.
  await oxy.waitForLog(new RegExp(`fixture tunnel on its connection connection=${id} requests=3 state=egress to 127\\.0\\.0\\.1:${echo.port}`));
  first.socket.destroy();
});

test("requests inside a tunnel the hook looks into are the CONNECT's user's, with no Proxy-Authorization of their own", async () => {
  const client = await Client.open(oxy.port("inspect"));
  const auth = `Basic ${Buffer.from("alice:a").toString("base64")}`;
  const connected = await client.request(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  assert.equal(connected.status, 200);
  // In absolute form, which outside a tunnel needs Proxy-Authorization on this endpoint.
  const inside = await client.request(`GET http://127.0.0.1:${echo.port}/hello HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`);
  assert.equal(inside.status, 200, inside.body);
  assert.equal(inside.headers["x-proxy-user"], "alice");
  // The request's end carries its user too.
  await oxy.waitForLog(/fixture request end connection=\d+ user="alice" method=GET uri=http:\/\/127\.0\.0\.1:\d+\/hello status=200/);
  client.socket.destroy();
});

test("Oxy exits cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
});
