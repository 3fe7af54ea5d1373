// The tunnel-quota example app (examples/tunnel-quota) with its shipped config
// (config/tunnel-quota.yaml), adjusted only for the test: the listener on port 0, the
// allowed port the echo server's, and loopback allowed by the egress policy. A user's
// tunnels past the user's quota are 429 (the framework's `http.user_limits`); a port not
// on the app's list is refused by the egress hook (403) before anything is connected;
// tunnels are counted by user and logged when they end.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse } from "yaml";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { OxyProcess, repoRoot, runToExit } from "../lib/oxy.ts";
import { basicAuth, proxyRequest } from "../lib/proxy-connect.ts";

const shippedPath = join(repoRoot, "config", "tunnel-quota.yaml");
let echo: EchoServer;
let other: EchoServer;
let oxy: OxyProcess;

before(async () => {
  echo = await startEchoServer();
  other = await startEchoServer();
  const settings = parse(readFileSync(shippedPath, "utf8"));
  assert.deepEqual(settings.endpoints[0].listen, ["127.0.0.1:8080"]);
  settings.endpoints[0].listen = ["127.0.0.1:0"];
  assert.deepEqual(settings.app.allowed_ports, [80, 443]);
  settings.app.allowed_ports = [echo.port];
  settings.egress = { allow: ["127.0.0.0/8"] };
  oxy = await OxyProcess.start({ binary: "tunnel-quota", settings });
});

after(async () => {
  await echo.close();
  await other.close();
});

const basic = basicAuth;

/** A CONNECT to `port` as `auth`'s user: the socket and the answer (head, blank line, and
 * a refusal's body), read whole; fails if the connection closes first. */
async function tunnel(port: number, auth: string): Promise<{ socket: Socket; head: string }> {
  const head = `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: ${auth}\r\n\r\n`;
  const reply = await proxyRequest(oxy.port("proxy"), head);
  return { socket: reply.socket, head: `${reply.head}\r\n\r\n${reply.body}` };
}

test("the shipped config is valid", async () => {
  const checked = await runToExit("tunnel-quota", ["--check-config", "-c", shippedPath]);
  assert.equal(checked.code, 0, checked.stderr);
});

test("bob's third tunnel at once is 429 (the default quota, 2); alice's are hers", async () => {
  const bob = basic("bob", "bob-secret");
  const open = [await tunnel(echo.port, bob), await tunnel(echo.port, bob)];
  for (const t of open) assert.match(t.head, /^HTTP\/1\.1 200 /);
  const third = await tunnel(echo.port, bob);
  assert.match(third.head, /^HTTP\/1\.1 429 [\s\S]*retry-after: 5\r\n[\s\S]*too many tunnels at once for user bob \(limit 2\)/i);
  const alice = await tunnel(echo.port, basic("alice", "alice-secret"));
  assert.match(alice.head, /^HTTP\/1\.1 200 /);
  await oxy.waitForMetric('tunnel_quota_tunnels_total{user="bob"}', 2);
  await oxy.waitForMetric('tunnel_quota_tunnels_total{user="alice"}', 1);

  // A tunnel carries bytes, and its end is logged with them.
  alice.socket.write("ping");
  await new Promise<void>((ok) => alice.socket.once("data", () => ok()));
  alice.socket.end();
  await oxy.waitForLog(new RegExp(`tunnel ended user="alice" target=127\\.0\\.0\\.1:${echo.port} up=4 down=4 seconds=[\\d.]+ reason=completed`));
  for (const t of [...open, third]) t.socket.destroy();
});

test("a port not on the list is refused before anything is connected (403)", async () => {
  const before = other.connections;
  const refused = await tunnel(other.port, basic("alice", "alice-secret"));
  assert.match(refused.head, /^HTTP\/1\.1 403 [\s\S]*egress denied by the application: port \d+ is not allowed/);
  refused.socket.destroy();
  await oxy.waitForMetric("tunnel_quota_port_refused_total", 1);
  assert.equal(other.connections, before, "nothing reached the refused port");
});

test("Oxy exits cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
});
