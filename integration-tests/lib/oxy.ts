// Starts Oxy application binaries with a settings object, waits for /health,
// captures their logs, and stops them, checking for a clean exit.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Every process started here; whatever a failed test left running is killed at the end. */
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill("SIGKILL");
  // A failed test may leave a server of its own open, which would keep this test file
  // (and the whole run) alive: give clean files time to end, then end this one.
  setTimeout(() => process.exit(), 2_000).unref();
});

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Path of a workspace binary built by `cargo build` (debug profile unless OXY_PROFILE). */
export function binaryPath(name: string): string {
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(repoRoot, "target");
  return join(targetDir, process.env.OXY_PROFILE ?? "debug", name);
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolvePort(address.port);
        else reject(new Error("no port"));
      });
    });
  });
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
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => (stdout += d));
  child.stderr?.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((ok) =>
    child.on("close", (c, s) => ok([c, s])),
  );
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

export interface StartOptions {
  /** Workspace binary name: `oxy`, `fixture-app`, `client-allowlist`, ... */
  binary: string;
  /** Settings object (`telemetry.listen` is set to a free port when missing), or YAML
   * text together with `telemetryListen`. */
  settings: Record<string, any> | string;
  /** The telemetry address in `settings` when they are YAML text. */
  telemetryListen?: string;
  env?: Record<string, string>;
  /** How long to wait for /health to say ready. */
  readyTimeoutMs?: number;
}

/** A running Oxy binary. */
export class OxyProcess {
  private output = "";
  private exited: Promise<[number | null, NodeJS.Signals | null]>;

  private constructor(
    readonly child: ChildProcess,
    readonly telemetryUrl: string,
    readonly configPath: string,
  ) {
    child.stdout?.on("data", (d) => (this.output += d));
    child.stderr?.on("data", (d) => (this.output += d));
    this.exited = new Promise((ok) => child.on("exit", (c, s) => ok([c, s])));
  }

  /** Starts the binary and waits until /health answers 200. */
  static async start(options: StartOptions): Promise<OxyProcess> {
    let configPath: string;
    let telemetryListen: string;
    if (typeof options.settings === "string") {
      if (!options.telemetryListen) throw new Error("YAML text settings need telemetryListen");
      telemetryListen = options.telemetryListen;
      configPath = writeConfig(options.settings);
    } else {
      const settings = structuredClone(options.settings);
      settings.telemetry ??= {};
      settings.telemetry.listen ??= `127.0.0.1:${await freePort()}`;
      telemetryListen = settings.telemetry.listen;
      configPath = writeConfig(settings);
    }
    const child = track(
      spawn(binaryPath(options.binary), ["--config", configPath], {
        env: { ...process.env, RUST_LOG: "", ...options.env },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    const oxy = new OxyProcess(child, `http://${telemetryListen}`, configPath);
    const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000);
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${options.binary} exited during start:\n${oxy.logs()}`);
      }
      try {
        const res = await fetch(`${oxy.telemetryUrl}/health`);
        if (res.status === 200) return oxy;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    child.kill("SIGKILL");
    throw new Error(`${options.binary} not ready in time:\n${oxy.logs()}`);
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
    const res = await fetch(`${this.telemetryUrl}${path}`);
    return { status: res.status, body: await res.text() };
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

  /** Waits for the process to exit (killing it after the timeout). */
  async waitForExit(timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const [code, signal] = await this.exited;
    clearTimeout(timer);
    return { code, signal };
  }

  /** Sends `signal` (SIGTERM by default) and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000) {
    this.signal(signal);
    return this.waitForExit(timeoutMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((ok) => setTimeout(ok, ms));
}

/** Opens a TCP connection to 127.0.0.1:port. */
export function openTcp(port: number): Promise<Socket> {
  return new Promise((ok, fail) => {
    const socket = connect(port, "127.0.0.1", () => ok(socket));
    socket.once("error", fail);
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

/** Waits until something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      (await openTcp(port)).destroy();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}
