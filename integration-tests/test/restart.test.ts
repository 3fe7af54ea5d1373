// Graceful restart (SIGHUP, `oxy --restart`): under a steady load of HTTP/1.1, HTTP/2,
// HTTP/3 and CONNECT tunnels no request fails and no connection is refused across five
// restarts, and every port stays; a successor that cannot start leaves the old process
// serving; tunnels open on the old process run on until they end, or until the drain
// deadline cuts them.

import assert from "node:assert/strict";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { after, before, test, type TestContext } from "node:test";
import { makePki, type TestPki } from "../lib/certs.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { spawn } from "node:child_process";
import { OxyProcess, binaryPath, runToExit, until } from "../lib/oxy.ts";
import { h3Attack } from "../lib/quic-attacks.ts";
import { EchoTunnel, formatStats, http1Get, loadKinds, openTunnel, startLoad, type LoadOptions, type LoadRun, type LoadStats } from "../lib/restart-load.ts";
import { RestartingOxy, exitOf } from "../lib/restarts.ts";

let pki: TestPki;
let origin: Origin;
let echo: EchoServer;

before(async () => {
  pki = makePki();
  origin = await startOrigin();
  echo = await startEchoServer();
});

after(async () => {
  await origin.close();
  await echo.close();
});

const RESTARTS_FAILED = 'oxy_restarts_total{result="failed"}';

/** `web`: HTTP/1.1 and h2c on TCP, forward proxy and CONNECT; `secure`: TLS and HTTP/3,
 * a reverse proxy to the origin. */
function settings(shutdownTimeout: string): Record<string, any> {
  return {
    server: { shutdown_timeout: shutdownTimeout, restart_timeout: "15s" },
    // No line per request or tunnel: the logs are searched while thousands go by.
    telemetry: { log: { level: "info,oxy::access=warn,oxy::audit=warn,oxy::tunnel=warn" } },
    egress: { allow: ["127.0.0.0/8"] },
    endpoints: [
      { name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true, connect: true } },
      {
        name: "secure",
        listen: ["127.0.0.1:0"],
        tls: { enabled: true, certificates: [pki.server] },
        http: { upstream: `http://127.0.0.1:${origin.port}`, h3: { enabled: true } },
      },
    ],
  };
}

function load(oxy: RestartingOxy, shutdownTimeoutMs: number, options: Partial<LoadOptions> = {}): LoadRun {
  return startLoad({ proxyPort: oxy.oxy.port("web"), originPort: origin.port, echoPort: echo.port, shutdownTimeoutMs, ...options });
}

/** Asserts that no kind failed or was refused. */
function assertNoFailure(stats: LoadStats, run: LoadRun): void {
  const report = formatStats(stats, run.startedAt);
  for (const kind of loadKinds) {
    assert.equal(stats[kind].failed, 0, `${kind} failed:\n${report}`);
    assert.equal(stats[kind].refused, 0, `${kind} refused:\n${report}`);
  }
}

/** Origin requests seen so far are not needed; the list would only grow under load. */
function forgetOriginRequests(): void {
  origin.seen.length = 0;
}

/** Restarts Oxy `restarts` times under a load of every kind, with `server` added to the
 * settings' `server:` section: no request fails, no connection is refused, every port stays. */
async function restartsUnderLoad(t: TestContext, restarts: number, server: Record<string, any> = {}) {
  const shutdownTimeoutMs = 5_000;
  const base = settings("5s");
  const oxy = await RestartingOxy.start({ settings: { ...base, server: { ...base.server, ...server } } });
  t.after(() => oxy.killAll());
  const endpointsBefore = oxy.oxy.endpoints();
  const run = load(oxy, shutdownTimeoutMs, {
    // Tunnels end by themselves well before the drain deadline: none is cut.
    tunnelLifetimeMs: 1_000,
    http3: { url: `https://localhost:${oxy.oxy.port("secure", "quic")}/load/http3`, ca: pki.ca, runSeconds: 1, concurrency: 4 },
  });
  t.after(() => run.stop());
  await run.waitForOkSinceMark(5);

  for (let i = 1; i <= restarts; i++) {
    const restart = await oxy.restart();
    run.noteRestart(restart.signalledAt, restart.readyAt);
    assert.deepEqual(await oxy.endpoints(), endpointsBefore, `the ports after restart ${i}`);
    forgetOriginRequests();
    // The new process serves before the next restart.
    run.mark();
    await run.waitForOkSinceMark({ http1: 5, http2: 5, shortTunnel: 2 });
  }
  assert.equal(oxy.pids.size, restarts + 1, "each process with its own pid");

  // About a second more: every kind succeeds on the last process (HTTP/3 in a run and
  // tunnels on connections opened after the last restart).
  run.mark();
  await run.waitForOkSinceMark({ http1: 100, http2: 100, tunnel: 20, shortTunnel: 20, http3: 10 });
  const stats = await run.stop();
  assertNoFailure(stats, run);
  const report = formatStats(stats, run.startedAt);
  assert.equal(stats.tunnel.cut, 0, `tunnels ended by themselves before the deadline:\n${report}`);
  for (const kind of loadKinds) assert.ok(stats[kind].okSinceMark > 0, `${kind} succeeded after the last restart:\n${report}`);
  assert.ok(stats.http1.connections > 4 && stats.http2.connections > 2, `clients reconnected after Connection: close and GOAWAY:\n${report}`);
  assert.deepEqual(await oxy.endpoints(), endpointsBefore);
  await oxy.shutdown();
}

test("five restarts under load: no request fails, no connection is refused, every port stays", async (t) => {
  await restartsUnderLoad(t, 5);
});

test("server.scheduling: work_stealing (one runtime whose threads take tasks from each other): two restarts under load lose nothing", async (t) => {
  await restartsUnderLoad(t, 2, { scheduling: "work_stealing", worker_threads: 2 });
});

test("a successor that cannot start leaves the old process serving; once the settings are fixed the restart succeeds", async (t) => {
  const oxy = await RestartingOxy.start({ settings: settings("5s") });
  t.after(() => oxy.killAll());
  const run = load(oxy, 5_000, { tunnelLifetimeMs: 500 });
  t.after(() => run.stop());
  await run.waitForOkSinceMark(5);

  const good = readFileSync(oxy.configPath, "utf8");
  const broken = JSON.parse(good);
  broken.endpoints[0].listen = ["not-an-address"];
  writeFileSync(oxy.configPath, JSON.stringify(broken, null, 2));
  const pid = oxy.pid;
  process.kill(pid, "SIGHUP");
  await until(async () => ((await oxy.metric(RESTARTS_FAILED)) === 1 ? true : undefined), () => `${RESTARTS_FAILED} 1\n${oxy.oxy.logs()}`, 20_000);
  // The successor's own error (it shares the old process's stderr), and the old one's.
  await oxy.oxy.waitForLog(/endpoints\[0\]\.listen\[0\]: invalid socket address syntax/);
  await oxy.oxy.waitForLog(/^.*\bERROR\b.*\brestart.*$/m);
  assert.equal(oxy.readPid(), pid, "the pid file still names the old process");
  assert.ok(oxy.running(pid), "the old process still runs");
  assert.equal((await oxy.telemetry("/health")).status, 200);
  forgetOriginRequests();
  run.mark();
  await run.waitForOkSinceMark(5);

  writeFileSync(oxy.configPath, good);
  const restart = await oxy.restart();
  run.noteRestart(restart.signalledAt, restart.readyAt);
  assert.notEqual(restart.newPid, pid);
  run.mark();
  await run.waitForOkSinceMark(5);
  const stats = await run.stop();
  assertNoFailure(stats, run);
  await oxy.shutdown();
});

test("oxy --config FILE --restart restarts through server.control_socket and exits 0; with nothing to ask, 1", async (t) => {
  const oxy = await RestartingOxy.start({ settings: settings("5s"), controlSocket: true });
  t.after(() => oxy.killAll());
  const restart = await oxy.restart("control");
  assert.equal(restart.control?.code, 0, `${restart.control?.stdout}${restart.control?.stderr}`);
  assert.notEqual(restart.newPid, restart.oldPid);
  assert.ok(oxy.running(restart.newPid));
  const answer = await http1Get(false, oxy.oxy.port("web"), origin.port, "/after-control-restart");
  assert.deepEqual(answer, { ok: true });
  const tunnel = await openTunnel(oxy.oxy.port("web"), echo.port, 5_000);
  assert.ok(tunnel instanceof EchoTunnel, JSON.stringify(tunnel));
  assert.equal(await tunnel.echo("after --restart", 5_000), "ok");

  // Draining after SIGTERM (the tunnel keeps the process up), a restart is refused at once.
  process.kill(oxy.pid, "SIGTERM");
  await oxy.oxy.waitForLog(/shutting down: draining connections signal=SIGTERM/);
  const late = await runToExit("oxy", ["--config", oxy.configPath, "--restart"]);
  assert.equal(late.code, 1, `${late.stdout}${late.stderr}`);
  assert.match(late.stderr, /restart failed: this process is stopping/);
  assert.equal(await tunnel.end(5_000), undefined);
  await oxy.shutdown();

  const nobody = await runToExit("oxy", ["--config", oxy.configPath, "--restart"]);
  assert.equal(nobody.code, 1, `${nobody.stdout}${nobody.stderr}`);
  assert.notEqual(nobody.stderr.trim(), "", "the reason");
});

test("a tunnel open on the old process outlives the restart until it ends by itself", async (t) => {
  const shutdownTimeoutMs = 30_000;
  const oxy = await RestartingOxy.start({ settings: settings("30s") });
  t.after(() => oxy.killAll());
  const port = oxy.oxy.port("web");
  const tunnel = await openTunnel(port, echo.port, 5_000);
  assert.ok(tunnel instanceof EchoTunnel, JSON.stringify(tunnel));
  assert.equal(await tunnel.echo("before the restart;", 5_000), "ok");

  const restart = await oxy.restart();
  for (let i = 0; i < 5; i++) {
    assert.equal(await tunnel.echo(`after the restart ${i};`, 5_000), "ok");
    await new Promise((ok) => setTimeout(ok, 50));
  }
  assert.equal(oxy.oxy.child.exitCode, null, "the old process drains while its tunnel is open");
  const fresh = await openTunnel(port, echo.port, 5_000);
  assert.ok(fresh instanceof EchoTunnel, JSON.stringify(fresh));
  assert.equal(await fresh.echo("on the successor;", 5_000), "ok");
  assert.equal(await fresh.end(5_000), undefined);

  assert.equal(await tunnel.end(5_000), undefined, "the client ends the tunnel");
  const exit = await exitOf(oxy.oxy.child, 10_000);
  assert.deepEqual(exit, { code: 0, signal: null }, oxy.oxy.logs());
  assert.ok(Date.now() < restart.signalledAt + shutdownTimeoutMs, "it left when its tunnel ended, before the drain deadline");
  await oxy.shutdown();
});

test("a tunnel still open at the drain deadline is cut, and the old process logs how many it cut", async (t) => {
  const shutdownTimeoutMs = 2_000;
  const oxy = await RestartingOxy.start({ settings: settings("2s") });
  t.after(() => oxy.killAll());
  const run = load(oxy, shutdownTimeoutMs, { http1Connections: 0, http2Sessions: 0, shortTunnels: 0, tunnels: 1 });
  t.after(() => run.stop());
  await run.waitForOkSinceMark({ tunnel: 3 });

  const restart = await oxy.restart();
  run.noteRestart(restart.signalledAt, restart.readyAt);
  await until(
    () => {
      const stats = run.stats();
      if (stats.tunnel.failed > 0) throw new Error(formatStats(stats, run.startedAt));
      return stats.tunnel.cut === 1 ? true : undefined;
    },
    () => `the tunnel cut at the deadline\n${formatStats(run.stats(), run.startedAt)}`,
    shutdownTimeoutMs + 5_000,
  );
  const exit = await exitOf(oxy.oxy.child, 5_000);
  assert.deepEqual(exit, { code: 0, signal: null }, oxy.oxy.logs());
  // As a SIGTERM drain logs it (`drain period over; closed open connections
  // connections=1`), or a line that says cut and 1.
  await oxy.oxy.waitForLog(/drain period over[^\n]*\bconnections=1\b|^(?=.*\bcut)(?=.*\b1\b).*$/im);

  // The loop opens its next tunnel, on the successor (it may have before a mark() here).
  const echoedBefore = run.stats().tunnel.ok;
  await until(() => (run.stats().tunnel.ok >= echoedBefore + 3 ? true : undefined), () => `echoes on the successor\n${formatStats(run.stats(), run.startedAt)}`);
  const stats = await run.stop();
  assertNoFailure(stats, run);
  assert.equal(stats.tunnel.cut, 1, formatStats(stats, run.startedAt));
  await oxy.shutdown();
});

test("HTTP/3 across a restart: the old process's connections get GOAWAY and finish their requests, new connections go to the successor", async (t) => {
  const oxy = await RestartingOxy.start({ settings: settings("5s") });
  t.after(() => oxy.killAll());
  const url = `https://localhost:${oxy.oxy.port("secure", "quic")}/h3-drain`;
  const client = spawn(binaryPath("oxy-client"), ["get", url, "--ca", pki.ca, "--duration", "3", "--concurrency", "2"], { stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => client.kill("SIGKILL"));
  let output = "";
  client.stdout!.on("data", (d) => (output += d));
  client.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((ok) => client.on("close", ok));
  // Its two connections are the old process's, busy with requests.
  await until(() => (origin.seen.filter((r) => r.url === "/h3-drain").length >= 20 ? true : undefined), () => `HTTP/3 requests before the restart:\n${output}`, 10_000);
  const oldPid = oxy.pid;
  const restart = await oxy.restart();
  assert.equal((await exitOf(oxy.oxy.child, 10_000)).code, 0, "the old process drained and exited 0");
  assert.equal(await exited, 0, output);
  const summary = JSON.parse(output.trim().split("\n").at(-1)!);
  assert.equal(summary.failed, 0, `no HTTP/3 request failed: ${output}`);
  assert.ok(summary.ok > 20, output);
  // After GOAWAY each worker opened a new connection, which the successor accepted.
  assert.ok(summary.connections >= 3, `reconnected after GOAWAY: ${output}`);
  assert.notEqual(restart.newPid, oldPid);
  const accepted = await oxy.metric('oxy_connections_accepted_total{endpoint="secure"}');
  assert.ok((accepted ?? 0) >= 1, `the successor accepted the new QUIC connections (${accepted})`);
  await oxy.shutdown();
});

test("HTTP/3 draining: a request that comes right after the one before it ended, past the GOAWAY's grace period, is still answered", async (t) => {
  const oxy = await OxyProcess.start({ binary: "oxy", settings: settings("10s") });
  t.after(() => oxy.signal("SIGKILL"));
  // The first request is answered 1.5 s after it reaches the origin; the drain (and its
  // GOAWAY) starts meanwhile, so its grace period ends long before the answer. aioquic's
  // client ignores the GOAWAY and sends the second request as soon as the first ends:
  // the connection must still be open for it.
  const run = h3Attack("late-request", ["--port", oxy.port("secure", "quic"), "--ca", pki.ca, "--first", "/delay/1500/late-first", "--second", "/late-second"]);
  await until(() => (origin.seen.some((r) => r.url === "/delay/1500/late-first") ? true : undefined), () => "the first request at the origin");
  oxy.signal("SIGTERM");
  await oxy.waitForLog(/shutting down: draining connections/);
  const result = await run;
  assert.deepEqual({ first: result.first, second: result.second }, { first: 200, second: 200 }, JSON.stringify(result));
  assert.deepEqual(await oxy.waitForExit(), { code: 0, signal: null });
});

test("a new binary installed at the same path is what the restart runs", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "oxy-upgrade-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const installed = join(dir, "proxy");
  copyFileSync(binaryPath("oxy"), installed);
  chmodSync(installed, 0o755);
  const oxy = await RestartingOxy.start({ binary: relative(dirname(binaryPath("oxy")), installed), settings: { endpoints: [{ name: "web", listen: ["127.0.0.1:0"] }] } });
  t.after(() => oxy.killAll());
  const app = async () => /oxy_build_info\{[^}]*app="([^"]+)"/.exec((await oxy.telemetry("/metrics")).body)?.[1];
  assert.equal(await app(), "oxy");
  // An upgrade as package managers do it: the new file renamed over the old one.
  copyFileSync(binaryPath("fixture-app"), `${installed}.new`);
  chmodSync(`${installed}.new`, 0o755);
  renameSync(`${installed}.new`, installed);
  await oxy.restart();
  assert.equal(await app(), "fixture-app", "the successor is the new binary");
  await oxy.shutdown();
});
