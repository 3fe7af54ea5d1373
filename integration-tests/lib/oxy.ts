// Starts Oxy application binaries with a settings object, every listener on a port the
// kernel picks (port 0): waits for the telemetry address file, /health and /endpoints,
// tells the bound addresses, captures the logs, and stops them, checking for a clean exit.

import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Every process started here; whatever a failed test left running is killed at the end. */
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill("SIGKILL");
  // A failed test may leave a server of its own open, which would keep this test file
  // (and the whole run) alive: give clean files time to end, then end this one.
  setTimeout(() => process.exit(), 2_000).unref();
});

/** Kills `child` at the end of the test file if it still runs then. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Path of a workspace binary built by `cargo build` (debug profile unless OXY_PROFILE). */
export function binaryPath(name: string): string {
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(repoRoot, "target");
  return join(targetDir, process.env.OXY_PROFILE ?? "debug", name);
}

/** Writes settings (an object, written as JSON, which is YAML; or YAML text) to a temp file. */
export function writeConfig(settings: object | string, name = "oxy.yaml"): string {
  const dir = mkdtempSync(join(tmpdir(), "oxy-test-"));
  const path = join(dir, name);
  writeFileSync(path, typeof settings === "string" ? settings : JSON.stringify(settings, null, 2));
  return path;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a binary to completion (for --check-config, --generate-config, failures at start). */
export async function runToExit(
  binary: string,
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  const child = track(
    spawn(binaryPath(binary), args, {
      env: { ...process.env, RUST_LOG: "", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  return collectExit(child, options.timeoutMs ?? 20_000);
}

/** What a child process printed and how it ended; it is killed after `timeoutMs`. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects `child`'s output until it exits (killed after `timeoutMs`). */
export function collectExit(child: ChildProcess, timeoutMs: number): Promise<ChildExit> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => (stdout += d));
  child.stderr?.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  return new Promise((ok) =>
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      ok({ code, signal, stdout, stderr });
    }),
  );
}

export interface StartOptions {
  /** Workspace binary name: `oxy`, `fixture-app`, `client-allowlist`, ... */
  binary: string;
  /** Settings as an object or as YAML text (parsed into an object). `telemetry.listen`
   * becomes `127.0.0.1:0` when missing, and `telemetry.address_file` is always set. */
  settings: Record<string, any> | string;
  env?: Record<string, string>;
  /** How long to wait for the telemetry address and then for /health to say ready. */
  readyTimeoutMs?: number;
  /** The test makes the process attempt a forbidden system call; otherwise `stop()`
   * fails when the log shows one (every test runs under the default seccomp filter). */
  expectSeccompViolations?: boolean;
  /** Run the binary inside this network namespace (`ip netns exec NETNS`); telemetry is
   * then asked with `curl` inside it too. */
  netns?: string;
}

/** GET `url`, from inside network namespace `netns` (with `curl`) when one is given. */
async function httpGet(url: string, netns?: string): Promise<{ status: number; contentType: string; body: string }> {
  if (!netns) {
    const res = await fetch(url);
    return { status: res.status, contentType: res.headers.get("content-type") ?? "", body: await res.text() };
  }
  const args = ["netns", "exec", netns, "curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code} %{content_type}", url];
  const out = await new Promise<string>((ok, fail) =>
    execFile("ip", args, { maxBuffer: 64 << 20 }, (e, stdout, stderr) => (e ? fail(new Error(`curl ${url} in ${netns}: ${stderr || e.message}`)) : ok(stdout))),
  );
  const cut = out.lastIndexOf("\n");
  const [status, ...type] = out.slice(cut + 1).split(" ");
  return { status: Number(status), contentType: type.join(" "), body: out.slice(0, cut) };
}

/** How a listener of an endpoint carries traffic (`quic`: HTTP/3). */
export type Transport = "tcp" | "udp" | "quic";

/** One bound listener, as /endpoints reports it. */
export interface Listener {
  transport: Transport;
  /** `127.0.0.1:40001`, `[::1]:40001`. */
  address: string;
}

/** One endpoint and its bound listeners, as /endpoints reports it. */
export interface EndpointInfo {
  name: string;
  protocol: string;
  /** In the order of the endpoint's `listen` list, then the QUIC ones. */
  listeners: Listener[];
}

/** The port of `host:port` or `[v6]:port`. */
export function portOf(address: string): number {
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no port in ${JSON.stringify(address)}`);
  return port;
}

/** A running Oxy binary. */
export class OxyProcess {
  private output = "";
  /** Resolves when the process has exited and its stdout and stderr are read to the end. */
  private closed: Promise<[number | null, NodeJS.Signals | null]>;
  /** What /endpoints said once the process was ready. */
  private endpointList: EndpointInfo[] = [];
  private boundTelemetry = "";
  /** Whether the test provokes forbidden system calls (see `StartOptions`). */
  private expectSeccompViolations = false;

  private constructor(
    readonly child: ChildProcess,
    readonly configPath: string,
    /** The network namespace it runs in, if any. */
    readonly netns?: string,
  ) {
    child.stdout?.on("data", (d) => (this.output += d));
    child.stderr?.on("data", (d) => (this.output += d));
    this.closed = new Promise((ok) => child.on("close", (c, s) => ok([c, s])));
  }

  /** The bound telemetry address (`127.0.0.1:40123`), from `telemetry.address_file`. */
  get telemetryAddress(): string {
    return this.boundTelemetry;
  }

  /** `http://` and the bound telemetry address. */
  get telemetryUrl(): string {
    return `http://${this.boundTelemetry}`;
  }

  /** Starts the binary; waits until it has written its telemetry address, /health
   * answers 200 (every listener is bound) and /endpoints has told the bound addresses. */
  static async start(options: StartOptions): Promise<OxyProcess> {
    const settings: Record<string, any> =
      typeof options.settings === "string" ? (parseYaml(options.settings) ?? {}) : structuredClone(options.settings);
    settings.telemetry ??= {};
    if (settings.telemetry.enabled === false) throw new Error("OxyProcess needs telemetry to see when the process is ready");
    settings.telemetry.listen ??= "127.0.0.1:0";
    const addressFile = join(mkdtempSync(join(tmpdir(), "oxy-telemetry-")), "address");
    settings.telemetry.address_file = addressFile;
    const configPath = writeConfig(settings);
    const command = [binaryPath(options.binary), "--config", configPath];
    if (options.netns) command.unshift("ip", "netns", "exec", options.netns); // which execs the binary
    const child = track(
      spawn(command[0], command.slice(1), {
        env: { ...process.env, RUST_LOG: "", ...options.env },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    const oxy = new OxyProcess(child, configPath, options.netns);
    oxy.expectSeccompViolations = options.expectSeccompViolations ?? false;
    try {
      await oxy.becomeReady(options.binary, addressFile, Date.now() + (options.readyTimeoutMs ?? 20_000));
    } catch (e) {
      child.kill("SIGKILL");
      await Promise.race([oxy.closed, sleep(2_000)]); // all of its output, for the message
      throw new Error(`${options.binary}: ${(e as Error).message}\n${oxy.logs()}`);
    }
    return oxy;
  }

  /** Waits for the address file, then /health 200, then reads /endpoints; throws when the
   * process exits first or `deadline` passes. */
  private async becomeReady(binary: string, addressFile: string, deadline: number): Promise<void> {
    const running = (waitingFor: string) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`exited during start (${this.child.exitCode ?? this.child.signalCode})`);
      }
      if (Date.now() > deadline) throw new Error(`not ready in time: ${waitingFor}`);
    };
    // Written aside and renamed into place: once it is there, it is complete.
    for (;;) {
      running(`no telemetry address in ${addressFile}`);
      if (existsSync(addressFile)) break;
      await sleep(20);
    }
    const text = readFileSync(addressFile, "utf8");
    if (!/^\S+\n$/.test(text)) throw new Error(`${addressFile} holds ${JSON.stringify(text)}, not an address and a newline`);
    this.boundTelemetry = text.trim();
    for (;;) {
      running(`/health at ${this.telemetryUrl} never answered 200`);
      const status = await httpGet(`${this.telemetryUrl}/health`, this.netns).then(
        (res) => res.status,
        () => 0, // not expected once the address is written; tried again until the deadline
      );
      if (status === 200) break;
      await sleep(20);
    }
    const res = await httpGet(`${this.telemetryUrl}/endpoints`, this.netns);
    const body = res.body;
    if (res.status !== 200 || !/^application\/json\b/.test(res.contentType)) {
      throw new Error(`GET /endpoints answered ${res.status} (${res.contentType}): ${body}`);
    }
    this.endpointList = JSON.parse(body).endpoints;
  }

  /** Every endpoint and its bound listeners (/endpoints when the process became ready). */
  endpoints(): EndpointInfo[] {
    return this.endpointList;
  }

  /** The endpoint called `name`. */
  endpoint(name: string): EndpointInfo {
    const endpoint = this.endpointList.find((e) => e.name === name);
    if (!endpoint) throw new Error(`no endpoint ${name}: ${JSON.stringify(this.endpointList)}`);
    return endpoint;
  }

  /** The bound address (`127.0.0.1:40001`) of the endpoint's first listener of
   * `transport`, or of its first listener at all. */
  address(name: string, transport?: Transport): string {
    const endpoint = this.endpoint(name);
    const listener = endpoint.listeners.find((l) => transport === undefined || l.transport === transport);
    if (!listener) throw new Error(`endpoint ${name} has no ${transport ?? ""} listener: ${JSON.stringify(endpoint)}`);
    return listener.address;
  }

  /** The bound port of the endpoint's first listener of `transport` (or first listener). */
  port(name: string, transport?: Transport): number {
    return portOf(this.address(name, transport));
  }

  /** `scheme://address` of the endpoint's first listener (`http://127.0.0.1:40001`). */
  url(name: string, scheme = "http"): string {
    return `${scheme}://${this.address(name)}`;
  }

  /** Everything the process wrote to stdout and stderr so far. */
  logs(): string {
    return this.output;
  }

  /** Waits until the logs match `pattern`. */
  async waitForLog(pattern: RegExp, timeoutMs = 5_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.output.match(pattern);
      if (match) return match;
      if (Date.now() > deadline) throw new Error(`no log line matched ${pattern}:\n${this.output}`);
      await sleep(25);
    }
  }

  /** GET a telemetry path; returns status and body. */
  async telemetry(path: string): Promise<{ status: number; body: string }> {
    const res = await httpGet(`${this.telemetryUrl}${path}`, this.netns);
    return { status: res.status, body: res.body };
  }

  /** The value of one metric sample (`name{labels}`) from /metrics, or undefined. */
  async metric(sample: string): Promise<number | undefined> {
    const { body } = await this.telemetry("/metrics");
    for (const line of body.split("\n")) {
      if (line.startsWith(sample + " ")) return Number(line.slice(sample.length + 1));
    }
    return undefined;
  }

  /** Waits until a metric sample reaches `value`. */
  async waitForMetric(sample: string, value: number, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: number | undefined;
    while (Date.now() < deadline) {
      last = await this.metric(sample);
      if (last === value) return;
      await sleep(25);
    }
    throw new Error(`${sample} is ${last}, wanted ${value}`);
  }

  /** Sends a signal without waiting. */
  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Waits for the process to exit (killing it after the timeout); its output is then
   * complete. */
  async waitForExit(timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const [code, signal] = await this.closed;
    clearTimeout(timer);
    return { code, signal };
  }

  /** Sends `signal` (SIGTERM by default) and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000) {
    if (this.child.exitCode === null && this.child.signalCode === null) this.signal(signal);
    const exit = await this.waitForExit(timeoutMs);
    const refused = this.logs().split("\n").filter((line) => line.includes("seccomp: a forbidden system call"));
    if (refused.length > 0 && !this.expectSeccompViolations) {
      throw new Error(`the seccomp filter refused a system call the process needed:\n${refused.join("\n")}`);
    }
    return exit;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((ok) => setTimeout(ok, ms));
}

/** Polls `check` until it returns something other than undefined (or throws after
 * `timeoutMs`, with `what` in the message). */
export async function until<T>(
  check: () => Promise<T | undefined> | T | undefined,
  what: string | (() => string),
  timeoutMs = 5_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    await sleep(25);
  }
}

/** Opens a TCP connection to 127.0.0.1:port. */
export function openTcp(port: number): Promise<Socket> {
  return new Promise((ok, fail) => {
    const socket = connect(port, "127.0.0.1", () => ok(socket));
    socket.once("error", fail);
  });
}

/** Whether a TCP connection to `port` is refused (ECONNREFUSED). */
export function refusedAt(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      ok(false);
    });
    socket.once("error", (e: NodeJS.ErrnoException) => ok(e.code === "ECONNREFUSED"));
  });
}

/** Resolves when the peer has closed the connection (or it errored). */
export function closed(socket: Socket): Promise<void> {
  return new Promise((ok) => {
    if (socket.destroyed) return ok();
    socket.once("close", () => ok());
    socket.resume();
  });
}

/** Connects to 127.0.0.1:port, sends `payload`, half-closes, and collects the reply until
 * the connection closes. A reset (a refused tunnel closing with our bytes unread) ends the
 * reply like a close does. */
export function exchange(port: number, payload: string | Buffer): Promise<Buffer> {
  return new Promise((ok, fail) => {
    const chunks: Buffer[] = [];
    const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () => socket.end(payload));
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "ECONNRESET" && e.code !== "EPIPE") fail(e);
    });
    socket.on("close", () => ok(Buffer.concat(chunks)));
  });
}

/** Runs `oxy --check-config` on one endpoint `main` whose settings are `lines` (YAML,
 * indented under it), expects a settings error (exit 2, no panic) and returns stderr. */
export async function endpointSettingsErrors(lines: string[]): Promise<string> {
  const path = writeConfig(["endpoints:", "  - name: main", "    listen: [127.0.0.1:0]", ...lines, ""].join("\n"));
  const r = await runToExit("oxy", ["--check-config", "-c", path]);
  assert.equal(r.code, 2, r.stderr);
  assert.doesNotMatch(r.stderr, /panicked/);
  return r.stderr;
}
