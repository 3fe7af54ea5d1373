// The fleet shape (issue #18): HAProxy in a load balancer namespace, in TCP mode, sends
// PROXY v2 to three Oxys, each in a namespace of its own, and checks their /health on the
// telemetry listener; a load client in the load balancer's namespace sends HTTP/1.1
// requests (keep-alive, a new connection each, CONNECT tunnels) while each Oxy in turn is
// restarted gracefully with SIGHUP. Nothing may fail, every Oxy serves, HAProxy never sees
// one go down, and the audit records name the load client (from PROXY v2), not HAProxy.
//
// Every namespace is `oxyt-<pid>-<tag>`, every interface `ot<pid><tag>`; the addresses
// are private ones inside the namespaces only; each origin runs on its Oxy's loopback.
// Needs root; skipped with the reason where namespaces cannot be made.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { auditPath, auditWhere, readAudit } from "../lib/audit.ts";
import { startHaproxy, type Haproxy } from "../lib/haproxy.ts";
import { Netns, cannotRun, ifName, startHttpOrigin, sweepLeftovers, until, vethPair, type NsProcess, type NsServer } from "../lib/netns.ts";
import { OxyProcess, portOf, repoRoot } from "../lib/oxy.ts";

/** Set when this machine cannot run these tests: the suite is then skipped with it. */
const skip = cannotRun();
if (!skip) sweepLeftovers();

// Addresses, all inside the namespaces: HAProxy's frontend and the load client on the
// load balancer's loopback, and a /30 for each veth pair lb <-> oxyN.
const FRONTEND = "10.218.0.1";
const LOAD_CLIENT = "10.218.0.2";
const balancerSide = (n: number) => `10.218.${n}.1`;
const oxySide = (n: number) => `10.218.${n}.2`;
const OXYS = [1, 2, 3];
const SHUTDOWN_TIMEOUT_MS = 3_000;
const LOAD_SCRIPT = join(repoRoot, "integration-tests", "lib", "fleet-load.mjs");

/** One member of the fleet. */
interface FleetOxy {
  /** 1, 2, 3: its veth pair is 10.218.N.0/30. */
  n: number;
  name: string;
  ns: Netns;
  origin: NsServer;
  oxy: OxyProcess;
  pidFile: string;
  audit: string;
}

/** The pid in `path`, or undefined while there is none. */
function readPid(path: string): number | undefined {
  try {
    const text = readFileSync(path, "utf8").trim();
    return /^\d+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** Every Oxy pid ever seen, with the settings file its command line names. */
const seenPids = new Map<number, string>();

/** SIGKILLs `pid` if it is still an Oxy started with `configPath` (not a reused pid). */
function killIfOurs(pid: number, configPath: string) {
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(configPath)) return;
    process.kill(pid, "SIGKILL");
  } catch {
    // gone
  }
}

/** Whether `pid` has exited (gone, or a zombie nobody has reaped yet). */
function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** HAProxy, TCP mode: round robin over the Oxys with PROXY v2, HTTP checks of /health on
 * each one's telemetry port (no PROXY header there: another port than the server's). No
 * retries or redispatch, so a refused or cut connection reaches the client. */
function haproxyConfig(fleet: FleetOxy[]): string {
  return [
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 30s",
    "  timeout server 30s",
    "  timeout check 2s",
    "  retries 0",
    "listen fleet",
    "  bind fd@3",
    "  balance roundrobin",
    "  option httpchk GET /health",
    "  http-check expect status 200",
    "  default-server inter 500ms fall 3 rise 1",
    ...fleet.map((f) => `  server ${f.name} ${f.oxy.address("fleet")} send-proxy-v2 check port ${portOf(f.oxy.telemetryAddress)}`),
    "",
  ].join("\n");
}

describe("the fleet: HAProxy with PROXY v2 in front of three Oxys, restarted one by one under load", { skip }, () => {
  let lb: Netns;
  const fleet: FleetOxy[] = [];
  let haproxy: Haproxy | undefined;
  let load: NsProcess | undefined;

  before(async () => {
    lb = await Netns.create("lb");
    await lb.addAddress("lo", `${FRONTEND}/32`);
    await lb.addAddress("lo", `${LOAD_CLIENT}/32`);
    const namespaces = await Promise.all(OXYS.map((n) => Netns.create(`oxy${n}`)));
    for (const [i, n] of OXYS.entries()) {
      await vethPair(lb, ifName(`l${n}`), namespaces[i], ifName(`o${n}`));
      await lb.addAddress(ifName(`l${n}`), `${balancerSide(n)}/30`);
      await namespaces[i].addAddress(ifName(`o${n}`), `${oxySide(n)}/30`);
    }
    // One origin on each Oxy's loopback, all on the same port (the first one's, free in
    // the others: nothing else runs in a fresh namespace yet), so that one CONNECT target
    // reaches the origin of whichever Oxy HAProxy picks. Its body names the Oxy.
    const first = await startHttpOrigin(namespaces[0], "127.0.0.1", "oxy1");
    const origins = [first, ...(await Promise.all(OXYS.slice(1).map((n, i) => startHttpOrigin(namespaces[i + 1], "127.0.0.1", `oxy${n}`, first.port))))];

    const started = await Promise.all(
      OXYS.map(async (n, i) => {
        const pidFile = join(mkdtempSync(join(tmpdir(), "oxy-pid-")), "oxy.pid");
        const audit = auditPath();
        const oxy = await OxyProcess.start({
          binary: "oxy",
          netns: namespaces[i].name,
          settings: {
            server: { shutdown_timeout: `${SHUTDOWN_TIMEOUT_MS / 1000}s`, restart_timeout: "10s", pid_file: pidFile },
            egress: { allow: ["127.0.0.0/8"] },
            telemetry: { listen: `${oxySide(n)}:0`, audit: { path: audit } },
            endpoints: [
              {
                name: "fleet",
                listen: [`${oxySide(n)}:0`],
                proxy_protocol: { mode: "required", trusted: [`${balancerSide(n)}/32`] },
                http: { upstream: `http://127.0.0.1:${first.port}`, connect: true, x_forwarded_for: true },
              },
            ],
          },
        });
        return { n, name: `oxy${n}`, ns: namespaces[i], origin: origins[i], oxy, pidFile, audit };
      }),
    );
    fleet.push(...started);
    for (const f of fleet) {
      const pid = await until(() => readPid(f.pidFile), `a pid in ${f.pidFile}`);
      assert.equal(pid, f.oxy.child.pid, `${f.pidFile} names the process that was started`);
      seenPids.set(pid, f.oxy.configPath);
    }
    haproxy = await startHaproxy(1, haproxyConfig(fleet), { netns: lb.name, host: FRONTEND });
  });

  after(async () => {
    await load?.kill();
    await haproxy?.stop();
    for (const [pid, configPath] of seenPids) killIfOurs(pid, configPath);
    await Promise.all(fleet.map((f) => f.origin.close()));
    for (const ns of [...fleet.map((f) => f.ns), lb]) ns?.destroy();
  });

  test("SIGHUP to each Oxy in turn under load: no request fails, every Oxy serves, audit records name the load client", async () => {
    const requestsAt = () => fleet.map((f) => f.origin.events().length);
    /** Waits until every origin has seen `more` requests beyond `from`. */
    const everyOxyServes = (from: number[], more: number, what: string) =>
      until(() => (requestsAt().every((count, i) => count >= from[i] + more) ? true : undefined), () => `${what}: requests per origin ${requestsAt()} (from ${from})`, 15_000);

    const frontend = `${FRONTEND}:${haproxy!.ports[0]}`;
    load = lb.spawn(process.execPath, [LOAD_SCRIPT, frontend, LOAD_CLIENT, `127.0.0.1:${fleet[0].origin.port}`, "300000"]);
    await everyOxyServes([0, 0, 0], 20, "load through every Oxy before the restarts");

    for (const f of fleet) {
      const oldPid = readPid(f.pidFile)!;
      process.kill(oldPid, "SIGHUP");
      const newPid = await until(
        () => {
          const pid = readPid(f.pidFile);
          return pid !== undefined && pid !== oldPid ? pid : undefined;
        },
        () => `a new pid in ${f.pidFile} after SIGHUP to ${oldPid}:\n${f.oxy.logs()}`,
        15_000,
      );
      seenPids.set(newPid, f.oxy.configPath);
      await f.oxy.waitForLog(new RegExp(`restart: successor ready.*successor_pid=${newPid}\\b`));
      let health = { status: 0, body: "" };
      await until(
        async () => ((health = await f.oxy.telemetry("/health").catch((e) => ({ status: 0, body: String(e) }))).status === 200 ? true : undefined),
        () => `200 from /health of ${f.name} after the restart (last: ${health.status} ${health.body})`,
      );
      // The old process (the one this test started) drains and exits 0 within
      // shutdown_timeout; the successor keeps the same pipes, ports and pid file.
      await until(() => (exited(oldPid) ? true : undefined), () => `${f.name}'s old process ${oldPid} to exit:\n${f.oxy.logs()}`, SHUTDOWN_TIMEOUT_MS + 5_000);
      await until(() => (f.oxy.child.exitCode !== null || f.oxy.child.signalCode !== null ? true : undefined), `the exit status of ${oldPid}`);
      assert.deepEqual([f.oxy.child.exitCode, f.oxy.child.signalCode], [0, null], f.oxy.logs());
      assert.ok(!exited(newPid), `${f.name}'s successor ${newPid} runs`);
    }
    // The successors serve: more requests reach every origin after the last restart.
    await everyOxyServes(requestsAt(), 20, "load through every successor");

    await load.kill("SIGTERM");
    const summary = await load.waitForJson((x) => x.event === "summary", 10_000);
    const context = JSON.stringify(summary);
    assert.equal(summary.failed, 0, `failed requests: ${context}\nHAProxy:\n${haproxy!.output()}`);
    assert.equal(summary.ok, summary.requests, context);
    for (const kind of ["keepalive-a", "keepalive-b", "fresh", "tunnel"]) assert.ok(summary.served[kind], `${kind} requests were served: ${context}`);
    for (const kind of ["fresh", "tunnel"]) {
      for (const f of fleet) assert.ok(summary.served[kind][f.name] > 0, `${f.name} served ${kind} requests: ${context}`);
    }
    // HAProxy's checks never failed twice in a row during the restarts.
    assert.doesNotMatch(haproxy!.output(), /Server fleet\/oxy\d is DOWN/, haproxy!.output());

    // Reverse-proxied requests carry the load client's address from the PROXY header.
    for (const f of fleet) {
      const proxied = f.origin.events().filter((e) => /^\/(keepalive-.|fresh)\//.test(e.path));
      assert.ok(proxied.length > 0, f.name);
      for (const e of proxied) assert.equal(e.headers["x-forwarded-for"], LOAD_CLIENT, JSON.stringify(e));
    }

    // One audit record per tunnel, in the files of the Oxy (old or new process) that
    // carried it: the socket's peer is HAProxy's side of the veth, the original client
    // the load client.
    const tunnels: Record<string, number> = summary.served.tunnel;
    for (const f of fleet) {
      const records = await auditWhere(f.audit, (r) => r.protocol === "tcp", tunnels[f.name]);
      assert.equal(records.length, tunnels[f.name], `${f.name}: ${tunnels[f.name]} tunnels, audit records:\n${readAudit(f.audit).map((r) => JSON.stringify(r)).join("\n")}`);
      for (const r of records) {
        assert.equal(r.endpoint, "fleet", JSON.stringify(r));
        assert.equal(r.target, `127.0.0.1:${f.origin.port}`, JSON.stringify(r));
        assert.match(r.original_client ?? "", new RegExp(`^${LOAD_CLIENT.replaceAll(".", "\\.")}:\\d+$`), JSON.stringify(r));
        assert.match(r.client ?? "", new RegExp(`^${balancerSide(f.n).replaceAll(".", "\\.")}:\\d+$`), JSON.stringify(r));
      }
    }
    for (const f of fleet) assert.equal(await f.oxy.metric("oxy_panics_total"), 0, f.name);

    // The successors stop like any Oxy: SIGTERM, drained, gone.
    for (const f of fleet) {
      const pid = readPid(f.pidFile)!;
      process.kill(pid, "SIGTERM");
      await until(() => (exited(pid) ? true : undefined), () => `${f.name}'s successor ${pid} to exit on SIGTERM:\n${f.oxy.logs()}`, SHUTDOWN_TIMEOUT_MS + 5_000);
      assert.doesNotMatch(f.oxy.logs(), /panicked/);
    }
  });
});
