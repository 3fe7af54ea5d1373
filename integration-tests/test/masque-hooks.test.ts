// HTTP/3 requests and CONNECT-UDP flows go through the application's hooks (the fixture
// app's request hook blocks and answers, its tunnel hook blocks and redirects flows),
// and flows end cleanly when Oxy drains (HTTP/3 GOAWAY).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { auditPath, auditRecords } from "../lib/audit.ts";
import { makePki, type TestPki } from "../lib/certs.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";
import { OxyProcess, binaryPath, sleep } from "../lib/oxy.ts";

let pki: TestPki;
let echo: UdpEcho;
let other: UdpEcho;

before(async () => {
  pki = makePki();
  echo = await startUdpEcho();
  other = await startUdpEcho();
});

after(async () => {
  await echo.close();
  await other.close();
});

async function relay(app: Record<string, any> = {}, h3: Record<string, any> = {}) {
  const audit = auditPath();
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      telemetry: { audit: { path: audit } },
      endpoints: [
        {
          name: "relay",
          listen: ["127.0.0.1:0"],
          tls: { enabled: true, certificates: [pki.server] },
          http: { connect_udp: { enabled: true }, h3: { enabled: true, ...h3 } },
          app,
        },
      ],
    },
  });
  // HTTP/3 shares the TCP listener's port number; the clients use that number.
  return { oxy, port: oxy.port("relay", "quic"), audit };
}

/** Runs `oxy-client udp` over HTTP/3 with an echo load; its JSON summary. */
function load(port: number, target: number, count = 20): Promise<any> {
  return new Promise((ok, fail) => {
    const child = spawn(binaryPath("oxy-client"), [
      "udp", "--proxy", `https://localhost:${port}`, "--ca", pki.ca, "--over", "h3",
      "--target", `127.0.0.1:${target}`, "--count", String(count),
    ]);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) return fail(new Error(`oxy-client exited ${code}: ${err}`));
      ok(JSON.parse(out.trim().split("\n").pop() ?? "{}"));
    });
  });
}

test("the tunnel hook blocks a CONNECT-UDP flow: 403 and an audit record", async () => {
  const { oxy, port, audit } = await relay({ tunnel_block: "no UDP today" });
  try {
    const summary = await load(port, echo.port);
    assert.equal(summary.status, 403);
    const [record] = await auditRecords(audit, 1);
    assert.equal(record.protocol, "udp");
    assert.match(record.close_reason, /no UDP today/);
  } finally {
    await oxy.stop();
  }
});

test("the tunnel hook redirects a CONNECT-UDP flow to another target", async () => {
  const { oxy, port, audit } = await relay({ tunnel_redirect: `127.0.0.1:${other.port}` });
  try {
    const before = other.clients.size;
    const summary = await load(port, echo.port);
    assert.equal(summary.status, 200);
    assert.equal(summary.received, 20);
    assert.equal(other.clients.size, before + 1, "the redirect target carried the flow");
    const [record] = await auditRecords(audit, 1);
    assert.equal(record.target, `127.0.0.1:${other.port}`);
  } finally {
    await oxy.stop();
  }
});

/** Runs `oxy-client get` over HTTP/3; its status line and body. */
function h3Get(port: number, path: string): Promise<{ stderr: string; body: string }> {
  return new Promise((ok, fail) => {
    const child = spawn(binaryPath("oxy-client"), ["get", `https://localhost:${port}${path}`, "--ca", pki.ca]);
    let body = "";
    let stderr = "";
    child.stdout.on("data", (d) => (body += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) return fail(new Error(`oxy-client exited ${code}: ${stderr}`));
      ok({ stderr, body });
    });
  });
}

test("HTTP/3 requests go through the request hook: Block and Respond", async () => {
  const { oxy, port } = await relay({ block_path_prefix: "/private", respond_path: "/hi" });
  try {
    const blocked = await h3Get(port, "/private/x");
    assert.match(blocked.stderr, /status 403/);
    assert.match(blocked.body, /blocked by the fixture: \/private\/x/);
    const answered = await h3Get(port, "/hi");
    assert.match(answered.stderr, /status 200/);
    assert.match(answered.body, /hello from the fixture app/);
  } finally {
    await oxy.stop();
  }
});

test("with retry on, clients prove their address first and still get through", async () => {
  const { oxy, port } = await relay({}, { retry: true });
  try {
    const summary = await load(port, echo.port);
    assert.equal(summary.status, 200);
    assert.equal(summary.received, 20);
  } finally {
    await oxy.stop();
  }
});

test("a drain ends an open HTTP/3 flow cleanly and Oxy exits 0", async () => {
  const { oxy, port, audit } = await relay();
  const child = spawn(binaryPath("oxy-client"), [
    "udp", "--proxy", `https://localhost:${port}`, "--ca", pki.ca, "--target", `127.0.0.1:${echo.port}`,
  ]);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((ok) => child.on("exit", (code) => ok(code)));
  child.stdin.write("still here\n");
  const deadline = Date.now() + 5_000;
  while (!out.includes("still here") && Date.now() < deadline) await sleep(25);
  assert.match(out, /still here/);
  const { code } = await oxy.stop("SIGTERM");
  assert.equal(code, 0, oxy.logs());
  const [record] = await auditRecords(audit, 1);
  assert.equal(record.close_reason, "shutdown");
  // The client sees its flow end (the stream closes) and exits by itself.
  child.stdin.end();
  assert.equal(await exited, 0);
});
