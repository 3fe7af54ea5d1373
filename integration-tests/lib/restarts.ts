// Graceful restarts of an Oxy started with OxyProcess: `server.pid_file` (and optionally
// `server.control_socket`) in a temp directory, a restart by SIGHUP or by
// `oxy --config FILE --restart`, awaited until the pid file names a new pid, /health
// answers 200 on the same telemetry address and the `restart: successor ready` log line
// names that pid. Successors are not children of the test: every pid the pid file ever
// named is killed at the end of the test file (only while its command line still names
// this instance's settings file, so a reused pid is never hit).

import assert from "node:assert/strict";
import { type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { get as httpGet } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { OxyProcess, runToExit, sleep, until, type EndpointInfo, type RunResult } from "./oxy.ts";

/** Every instance started here, for the cleanup at the end of the file. */
const instances = new Set<RestartingOxy>();
after(() => {
  for (const instance of instances) instance.killAll();
});

/** One finished restart. */
export interface Restart {
  oldPid: number;
  newPid: number;
  /** When the signal was sent (or `--restart` started), Date.now(). */
  signalledAt: number;
  /** When the successor was seen ready (pid file, /health, log line), Date.now(). */
  readyAt: number;
  /** `oxy --restart`'s exit and output, for a restart through the control socket. */
  control?: RunResult;
}

/** The pids of `restart: successor ready` log lines, in order. */
export function successorReadyPids(logs: string): number[] {
  return [...logs.matchAll(/restart: successor ready\b[^\n]*?\bsuccessor_pid=(\d+)/g)].map((m) => Number(m[1]));
}

/** GET a telemetry path on a connection of its own (a kept-alive one could reach a
 * process that is draining): status and body. */
export function telemetryGet(address: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
    const req = httpGet({ host, port, path, agent: false, headers: { connection: "close" }, timeout: 5_000 }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ status: res.statusCode ?? 0, body }));
      res.on("error", fail);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: no answer in 5 s`)));
    req.on("error", fail);
  });
}

/** Resolves with how `child` exited; rejects after `timeoutMs`. */
export function exitOf(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`pid ${child.pid} still runs after ${timeoutMs} ms`)), timeoutMs);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      ok({ code, signal });
    });
  });
}

export interface RestartingStart {
  settings: Record<string, any>;
  binary?: string;
  /** Also set `server.control_socket` (for `--restart`). */
  controlSocket?: boolean;
}

/** An Oxy whose successors are followed through its pid file. */
export class RestartingOxy {
  /** Every pid the pid file named (the first process's too). */
  readonly pids = new Set<number>();
  /** The pid of the process serving now. */
  pid: number;

  private constructor(
    /** The first process: its logs hold every successor's too (they inherit its stdout
     * and stderr). */
    readonly oxy: OxyProcess,
    readonly binary: string,
    readonly pidFile: string,
    readonly controlSocket: string | undefined,
  ) {
    this.pid = oxy.child.pid!;
    this.pids.add(this.pid);
  }

  /** Starts Oxy with `server.pid_file` (and `control_socket`) set; waits until it is ready
   * and the pid file names it. */
  static async start(options: RestartingStart): Promise<RestartingOxy> {
    const dir = mkdtempSync(join(tmpdir(), "oxy-restart-"));
    const pidFile = join(dir, "oxy.pid");
    const controlSocket = options.controlSocket ? join(dir, "control.sock") : undefined;
    const settings = structuredClone(options.settings);
    settings.server = { ...settings.server, pid_file: pidFile, ...(controlSocket ? { control_socket: controlSocket } : {}) };
    const binary = options.binary ?? "oxy";
    const oxy = await OxyProcess.start({ binary, settings });
    const instance = new RestartingOxy(oxy, binary, pidFile, controlSocket);
    instances.add(instance);
    await until(() => (instance.readPid() === instance.pid ? true : undefined), () => `${pidFile} naming ${instance.pid} (it holds ${instance.readPid()})\n${oxy.logs()}`, 10_000);
    return instance;
  }

  /** The settings file (every successor runs with the same argv, so the same file). */
  get configPath(): string {
    return this.oxy.configPath;
  }

  /** What `telemetry.address_file` holds now. */
  telemetryAddressFile(): string {
    const path = JSON.parse(readFileSync(this.configPath, "utf8")).telemetry.address_file;
    return readFileSync(path, "utf8").trim();
  }

  /** The pid in the pid file, if it holds one (a pid and an optional newline). */
  readPid(): number | undefined {
    if (!existsSync(this.pidFile)) return undefined;
    const match = /^(\d+)\n?$/.exec(readFileSync(this.pidFile, "utf8"));
    return match ? Number(match[1]) : undefined;
  }

  /** GET a telemetry path of the serving process. */
  telemetry(path: string): Promise<{ status: number; body: string }> {
    return telemetryGet(this.oxy.telemetryAddress, path);
  }

  /** One metric sample (`name{labels}`) from /metrics, or undefined. */
  async metric(sample: string): Promise<number | undefined> {
    const { body } = await this.telemetry("/metrics");
    const line = body.split("\n").find((l) => l.startsWith(sample + " "));
    return line === undefined ? undefined : Number(line.slice(sample.length + 1));
  }

  /** The endpoints and bound addresses the serving process reports. */
  async endpoints(): Promise<EndpointInfo[]> {
    const res = await this.telemetry("/endpoints");
    assert.equal(res.status, 200, res.body);
    return JSON.parse(res.body).endpoints;
  }

  /** Restarts by SIGHUP to the serving pid, or by `oxy --config FILE --restart`; waits
   * until the successor serves: the pid file names a new pid, /health answers 200 on the
   * same telemetry address (whose address file still names it), and a `restart:
   * successor ready` line names the new pid. */
  async restart(how: "SIGHUP" | "control" = "SIGHUP", timeoutMs = 20_000): Promise<Restart> {
    const oldPid = this.pid;
    const readyBefore = successorReadyPids(this.oxy.logs()).length;
    const signalledAt = Date.now();
    let control: Promise<RunResult> | undefined;
    if (how === "SIGHUP") process.kill(oldPid, "SIGHUP");
    else control = runToExit(this.binary, ["--config", this.configPath, "--restart"], { timeoutMs });
    const logs = () => this.oxy.logs();
    const newPid = await until(
      () => {
        const pid = this.readPid();
        return pid !== undefined && pid !== oldPid ? pid : undefined;
      },
      () => `${this.pidFile} naming a pid other than ${oldPid}\n${logs()}`,
      timeoutMs,
    );
    this.pids.add(newPid);
    await until(
      async () => ((await this.telemetry("/health").catch(() => ({ status: 0 }))).status === 200 ? true : undefined),
      () => `/health 200 at ${this.oxy.telemetryAddress} after the restart\n${logs()}`,
      timeoutMs,
    );
    await until(
      () => (successorReadyPids(logs()).slice(readyBefore).includes(newPid) ? true : undefined),
      () => `a "restart: successor ready" line with successor_pid=${newPid}\n${logs()}`,
      timeoutMs,
    );
    const readyAt = Date.now();
    assert.equal(this.telemetryAddressFile(), this.oxy.telemetryAddress, "the successor's telemetry address");
    this.pid = newPid;
    return { oldPid, newPid, signalledAt, readyAt, control: control ? await control : undefined };
  }

  /** Whether `pid` is one of this instance's processes and still runs (not a zombie). */
  running(pid: number): boolean {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(this.configPath)) return false;
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      return state !== "Z" && state !== "X";
    } catch {
      return false;
    }
  }

  /** Ends the serving process with SIGTERM and waits until every process of this instance
   * is gone (draining old ones too); SIGKILL for any left after `timeoutMs`. */
  async shutdown(timeoutMs = 15_000): Promise<void> {
    if (this.running(this.pid)) process.kill(this.pid, "SIGTERM");
    const deadline = Date.now() + timeoutMs;
    while ([...this.pids].some((pid) => this.running(pid)) && Date.now() < deadline) await sleep(25);
    this.killAll();
  }

  /** SIGKILL to every process of this instance still running. */
  killAll(): void {
    for (const pid of this.pids) {
      try {
        if (this.running(pid)) process.kill(pid, "SIGKILL");
      } catch {
        // It ended meanwhile.
      }
    }
    if (this.oxy.child.exitCode === null && this.oxy.child.signalCode === null) this.oxy.child.kill("SIGKILL");
  }
}
