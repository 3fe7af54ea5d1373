// Network namespaces for the layer 3 tests (TUN devices, CONNECT-IP with a real client):
// namespaces and veth pairs named with a per-run prefix, commands and processes run
// inside them with `ip netns exec`, small servers (HTTP origin, UDP echo) that print
// JSON lines, and a cleanup that kills every process left in them and deletes them,
// even when a test failed. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { after } from "node:test";
import { binaryPath, until as untilIn } from "./oxy.ts";

/** Prefix of every namespace this run creates: `oxyt-<pid>-`. */
export const runPrefix = `oxyt-${process.pid}-`;

/** A network interface name unique to this run: `ot<pid><tag>`, at most 15 bytes. */
export function ifName(tag: string): string {
  const name = `ot${process.pid}${tag}`;
  if (name.length > 15) throw new Error(`interface name ${name} is longer than 15 bytes`);
  return name;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `command args...` to its end (killed after `timeoutMs`). */
export function run(command: string, args: string[], timeoutMs = 20_000): Promise<ExecResult> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  return new Promise((ok, fail) => {
    child.on("error", fail);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      ok({ code, signal, stdout, stderr });
    });
  });
}

/** Runs `ip args...`; throws with its output unless it exits 0. */
export async function ip(args: string[]): Promise<string> {
  const r = await run("ip", args);
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")} exited ${r.code ?? r.signal}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** `until` of lib/oxy.ts with a longer default: namespace set-up and real clients. */
export function until<T>(check: () => Promise<T | undefined> | T | undefined, what: string | (() => string), timeoutMs = 10_000): Promise<T> {
  return untilIn(check, what, timeoutMs);
}

// ---------------------------------------------------------------------------------------
// Cleanup: synchronous, so that it can also run from an `exit` handler.

/** Every namespace this run created and has not deleted yet. */
const created = new Set<string>();
/** Every process started in a namespace. */
const processes = new Set<ChildProcess>();

function syncSleep(ms: number) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The pids of the processes in namespace `name` (`ip netns pids`). */
function pidsIn(name: string): number[] {
  try {
    return execFileSync("ip", ["netns", "pids", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function namespaces(): string[] {
  try {
    return execFileSync("ip", ["netns", "list"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")
      .map((line) => line.split(" ")[0])
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** Kills every process in namespace `name` (by pid), waits until none is left (their
 * TUN devices and sockets are gone then) and deletes it. */
function destroyNamespace(name: string) {
  const deadline = Date.now() + 5_000;
  for (let pids = pidsIn(name); pids.length > 0; pids = pidsIn(name)) {
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (Date.now() > deadline) break;
    syncSleep(20);
  }
  try {
    execFileSync("ip", ["netns", "delete", name], { stdio: ["ignore", "ignore", "pipe"] });
  } catch {
    // not there (any more)
  }
  created.delete(name);
}

/** Kills what this run started in namespaces and deletes its namespaces. */
export function destroyAll() {
  for (const child of processes) child.kill("SIGKILL");
  for (const name of [...created]) destroyNamespace(name);
}

/** Deletes the namespaces of earlier runs that were left behind: those with this run's
 * prefix, and those of `oxyt-<pid>-` runs whose process is gone. */
export function sweepLeftovers() {
  for (const name of namespaces()) {
    const match = /^oxyt-(\d+)-/.exec(name);
    if (!match) continue;
    const pid = Number(match[1]);
    let alive = pid !== process.pid;
    if (alive) {
      try {
        process.kill(pid, 0);
      } catch {
        alive = false;
      }
    }
    if (!alive) destroyNamespace(name);
  }
}

after(() => destroyAll());
process.on("exit", () => destroyAll());
// Interrupted (Ctrl-C, a runner's timeout): clean up, then die of the signal as usual.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    destroyAll();
    process.kill(process.pid, signal);
  });
}

/** Why the namespace tests cannot run here (not root, no /dev/net/tun, no `ip`, `ping`
 * or `curl`), or undefined when they can. */
export function cannotRun(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces, TUN devices)";
  if (!existsSync("/dev/net/tun")) return "needs /dev/net/tun";
  for (const tool of ["ip", "ping", "curl"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `needs ${tool} (iproute2, iputils-ping, curl)`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------

/** A process started inside a namespace; its stdout and stderr are kept. */
export class NsProcess {
  private out = "";
  private err = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;

  constructor(readonly child: ChildProcess, readonly what: string) {
    processes.add(child);
    child.stdout!.on("data", (d) => (this.out += d));
    child.stderr!.on("data", (d) => (this.err += d));
    this.exited = new Promise((ok) =>
      child.on("close", (code, signal) => {
        this.done = true;
        processes.delete(child);
        ok({ code, signal });
      }),
    );
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  hasExited(): boolean {
    return this.done;
  }

  /** The JSON objects printed on stdout so far, one a line (complete lines only). */
  jsonLines(): any[] {
    return this.out
      .slice(0, this.out.lastIndexOf("\n") + 1)
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line));
  }

  /** Waits for a JSON line on stdout that `match` accepts; throws if the process exits
   * first. */
  async waitForJson(match: (x: any) => boolean = () => true, timeoutMs = 10_000): Promise<any> {
    return until(
      () => {
        const found = this.jsonLines().find(match);
        if (found) return found;
        if (this.done) throw new Error(`${this.what} exited without the line:\n${this.out}${this.err}`);
        return undefined;
      },
      () => `a JSON line from ${this.what}:\n${this.out}${this.err}`,
      timeoutMs,
    );
  }

  /** Kills the process (SIGKILL by default) and waits for its exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL") {
    if (!this.done) this.child.kill(signal);
    return this.exited;
  }
}

/** A network namespace this run created (with `lo` up). */
export class Netns {
  private constructor(readonly name: string) {}

  /** Creates namespace `oxyt-<pid>-<tag>` (deleting a leftover of the same name). */
  static async create(tag: string): Promise<Netns> {
    const name = `${runPrefix}${tag}`;
    if (namespaces().includes(name)) destroyNamespace(name);
    await ip(["netns", "add", name]);
    created.add(name);
    const ns = new Netns(name);
    await ns.ip(["link", "set", "lo", "up"]);
    return ns;
  }

  /** `ip -n NAME args...`; throws unless it exits 0. */
  ip(args: string[]): Promise<string> {
    return ip(["-n", this.name, ...args]);
  }

  /** Runs `command args...` inside the namespace to its end. */
  exec(command: string, args: string[], timeoutMs = 20_000): Promise<ExecResult> {
    return run("ip", ["netns", "exec", this.name, command, ...args], timeoutMs);
  }

  /** Starts `command args...` inside the namespace (`ip netns exec` execs it: the child's
   * pid is the command's). */
  spawn(command: string, args: string[], env: Record<string, string> = {}): NsProcess {
    const child = spawn("ip", ["netns", "exec", this.name, command, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: "", ...env },
    });
    return new NsProcess(child, `${command} in ${this.name}`);
  }

  /** Adds `cidr` to `dev`. */
  async addAddress(dev: string, cidr: string) {
    await this.ip(["addr", "add", cidr, "dev", dev, ...(cidr.includes(":") ? ["nodad"] : [])]);
  }

  /** The addresses (`100.64.0.1/32`) on `dev`, or undefined when there is no such device. */
  async addresses(dev: string): Promise<string[] | undefined> {
    const r = await run("ip", ["-n", this.name, "-j", "addr", "show", "dev", dev]);
    if (r.code !== 0) return undefined;
    const [link] = JSON.parse(r.stdout || "[]");
    if (!link) return undefined;
    return (link.addr_info ?? []).map((a: any) => `${a.local}/${a.prefixlen}`);
  }

  /** Whether device `dev` exists in the namespace. */
  async hasDevice(dev: string): Promise<boolean> {
    return (await run("ip", ["-n", this.name, "link", "show", "dev", dev])).code === 0;
  }

  /** The routes (`198.51.100.0/24`, `default`) through `dev`, IPv4 and IPv6. */
  async routes(dev: string): Promise<string[]> {
    const out: string[] = [];
    for (const family of ["-4", "-6"]) {
      const r = await run("ip", ["-n", this.name, "-j", family, "route", "show", "dev", dev]);
      if (r.code === 0) out.push(...JSON.parse(r.stdout || "[]").map((x: any) => x.dst));
    }
    return out;
  }

  /** Deletes the namespace now (killing what still runs in it). */
  destroy() {
    destroyNamespace(this.name);
  }
}

/** A veth pair: `aName` in `a` and `bName` in `b`, both up, made in one step. */
export async function vethPair(a: Netns, aName: string, b: Netns, bName: string) {
  await ip(["link", "add", aName, "netns", a.name, "type", "veth", "peer", "name", bName, "netns", b.name]);
  await a.ip(["link", "set", aName, "up"]);
  await b.ip(["link", "set", bName, "up"]);
}

// ---------------------------------------------------------------------------------------
// Small servers and clients inside a namespace (node, plain JavaScript).

const httpOriginScript = `
const http = require("node:http");
const [host, body, port] = process.argv.slice(1);
const server = http.createServer((req, res) => {
  console.log(JSON.stringify({ event: "request", from: req.socket.remoteAddress, method: req.method, path: req.url, headers: req.headers }));
  res.setHeader("content-type", "text/plain");
  res.end(body + " " + req.url);
});
server.listen(Number(port), host, () => console.log(JSON.stringify({ event: "listening", port: server.address().port })));
`;

const udpEchoScript = `
const dgram = require("node:dgram");
const [host] = process.argv.slice(1);
const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
socket.on("message", (msg, rinfo) => {
  console.log(JSON.stringify({ event: "datagram", from: rinfo.address + ":" + rinfo.port, data: msg.toString() }));
  socket.send(msg, rinfo.port, rinfo.address);
});
socket.bind(0, host, () => console.log(JSON.stringify({ event: "listening", port: socket.address().port })));
`;

const udpClientScript = `
const dgram = require("node:dgram");
const [host, port, payload, timeoutMs] = process.argv.slice(1);
const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
const timer = setTimeout(() => { console.log(JSON.stringify({ event: "timeout" })); process.exit(1); }, Number(timeoutMs));
socket.on("message", (msg, rinfo) => {
  console.log(JSON.stringify({ event: "reply", from: rinfo.address + ":" + rinfo.port, data: msg.toString() }));
  clearTimeout(timer);
  socket.close();
});
socket.send(payload, Number(port), host);
`;

/** A server started inside a namespace that printed `{"event":"listening","port":N}`. */
export interface NsServer {
  process: NsProcess;
  port: number;
  /** Its JSON lines other than the listening one (requests, datagrams). */
  events(): any[];
  close(): Promise<unknown>;
}

async function startServer(ns: Netns, script: string, args: string[], what: string): Promise<NsServer> {
  const proc = ns.spawn(process.execPath, ["-e", script, ...args]);
  const { port } = await proc.waitForJson((x) => x.event === "listening").catch((e) => {
    proc.child.kill("SIGKILL");
    throw new Error(`${what}: ${e.message}`);
  });
  return {
    process: proc,
    port,
    events: () => proc.jsonLines().filter((x) => x.event !== "listening"),
    close: () => proc.kill(),
  };
}

/** An HTTP origin on `host` (port 0, or `port`: the same port in several fresh
 * namespaces) inside `ns`: answers `BODY PATH`, logs each request (peer address, path,
 * headers) as a JSON line. */
export function startHttpOrigin(ns: Netns, host: string, body: string, port = 0): Promise<NsServer> {
  return startServer(ns, httpOriginScript, [host, body, String(port)], `HTTP origin on ${host} in ${ns.name}`);
}

/** A UDP echo on `host` (port 0) inside `ns`; logs each datagram as a JSON line. */
export function startUdpEchoIn(ns: Netns, host: string): Promise<NsServer> {
  return startServer(ns, udpEchoScript, [host], `UDP echo on ${host} in ${ns.name}`);
}

/** Sends one UDP datagram from inside `ns` to host:port and waits up to `timeoutMs` for
 * one reply: `{from, data}`, or undefined when none came. */
export async function udpExchange(ns: Netns, host: string, port: number, payload: string, timeoutMs = 5_000): Promise<{ from: string; data: string } | undefined> {
  const r = await ns.exec(process.execPath, ["-e", udpClientScript, host, String(port), payload, String(timeoutMs)], timeoutMs + 10_000);
  const reply = r.stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l))
    .find((x) => x.event === "reply");
  return reply ? { from: reply.from, data: reply.data } : undefined;
}

/** `ping` from inside `ns`: its output, exit code, and the transmitted/received counts. */
export async function ping(ns: Netns, target: string, count: number, waitSeconds = 2): Promise<ExecResult & { transmitted: number; received: number }> {
  const args = [...(target.includes(":") ? ["-6"] : []), "-n", "-c", String(count), "-W", String(waitSeconds), target];
  const r = await ns.exec("ping", args, (count * (waitSeconds + 1) + 10) * 1000);
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return { ...r, transmitted: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0 };
}

/** `curl` from inside `ns`: `-sS` and `args`; the body (stdout), stderr and exit code. */
export function curl(ns: Netns, args: string[], timeoutMs = 20_000): Promise<ExecResult> {
  return ns.exec("curl", ["-sS", ...args], timeoutMs);
}

/** Starts `oxy-client args...` inside `ns`. */
export function startOxyClient(ns: Netns, args: string[]): NsProcess {
  return ns.spawn(binaryPath("oxy-client"), args);
}
