// Runs `oxy-client` (tools/oxy-client): CONNECT-UDP loads with a JSON summary, one-shot
// runs (connect, get) with stdin and a timeout, and interactive CONNECT-UDP sessions.

import { spawn, type ChildProcess } from "node:child_process";
import { after } from "node:test";
import { binaryPath, sleep } from "./oxy.ts";

/** Every oxy-client started here; whatever a failed test left running is killed at the end. */
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill("SIGKILL");
});

export interface UdpOptions {
  /** `https://localhost:P` (TLS) or `http://127.0.0.1:P` (h2c or HTTP/1.1 in clear). */
  proxy: string;
  ca?: string;
  over?: "h3" | "h2" | "h1" | "direct";
  /** The UDP target, `host:port`. */
  target: string;
  size?: number;
  flows?: number;
  window?: number;
  /** Seconds to wait for an echo before counting it lost. */
  timeout?: number;
  authorization?: string;
  template?: string;
  /** The local IP to connect to the proxy from (`--bind`, e.g. `127.0.0.2`). */
  bind?: string;
}

/** The JSON line `oxy-client udp --count` prints. */
export interface UdpSummary {
  status: number;
  flows?: number;
  sent: number;
  received: number;
  [key: string]: unknown;
}

export interface ClientRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function udpArgs(options: UdpOptions): string[] {
  const args = ["udp", "--proxy", options.proxy, "--target", options.target];
  const optional: [string, unknown][] = [
    ["--ca", options.ca],
    ["--over", options.over],
    ["--size", options.size],
    ["--flows", options.flows],
    ["--window", options.window],
    ["--timeout", options.timeout],
    ["--authorization", options.authorization],
    ["--template", options.template],
    ["--bind", options.bind],
  ];
  for (const [flag, value] of optional) if (value !== undefined) args.push(flag, String(value));
  return args;
}

/** Runs `oxy-client args...` to its end, with `input` on stdin (then closed); killed after
 * `timeoutMs`. */
export function runClient(args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<ClientRun> {
  const child = spawn(binaryPath("oxy-client"), args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "" } });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  child.stdin!.on("error", () => {}); // the client may exit before reading it all
  child.stdin!.end(options.input ?? "");
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000);
  return new Promise((ok) =>
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      ok({ code, signal, stdout, stderr });
    }),
  );
}

/** `oxy-client udp --count N`: a generated echo load; its JSON summary (a refusal too). */
export async function udpLoad(options: UdpOptions & { count: number }, timeoutMs = 30_000): Promise<UdpSummary> {
  const args = [...udpArgs(options), "--count", String(options.count)];
  const run = await runClient(args, { timeoutMs });
  const line = run.stdout.trim().split("\n").pop() ?? "";
  if (run.code !== 0 || !line.startsWith("{")) {
    throw new Error(`oxy-client ${args.join(" ")} exited ${run.code ?? run.signal}:\n${run.stdout}${run.stderr}`);
  }
  return JSON.parse(line);
}

/** An interactive `oxy-client udp` (no --count): lines in are datagrams, lines out replies. */
export class UdpSession {
  private out = "";
  private err = "";
  /** Resolves with the exit code (or signal) when the client exits. */
  readonly exited: Promise<number | NodeJS.Signals | null>;
  private exitedYet = false;

  private constructor(readonly child: ChildProcess) {
    child.stdout!.on("data", (d) => (this.out += d));
    child.stderr!.on("data", (d) => (this.err += d));
    child.stdin!.on("error", () => {});
    this.exited = new Promise((ok) =>
      child.on("exit", (code, signal) => {
        this.exitedYet = true;
        children.delete(child);
        ok(code ?? signal);
      }),
    );
  }

  static start(options: UdpOptions): UdpSession {
    const child = spawn(binaryPath("oxy-client"), udpArgs(options), { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "" } });
    children.add(child);
    return new UdpSession(child);
  }

  /** Reply lines printed so far. */
  lines(): string[] {
    return this.out.split("\n").filter(Boolean);
  }

  stderr(): string {
    return this.err;
  }

  hasExited(): boolean {
    return this.exitedYet;
  }

  /** Sends one datagram (a line). */
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Ends stdin (the client then exits within its grace period). */
  endInput(): void {
    this.child.stdin!.end();
  }

  /** Waits until a reply line equals `line`. */
  async waitForLine(line: string, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.lines().includes(line)) {
      if (Date.now() > deadline || this.exitedYet) {
        throw new Error(`no reply ${JSON.stringify(line)}; stdout ${JSON.stringify(this.out)}, stderr ${JSON.stringify(this.err)}`);
      }
      await sleep(20);
    }
  }

  /** Whether the client exits by itself within `ms`. */
  async exitsWithin(ms: number): Promise<boolean> {
    return Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
  }

  /** Kills the client if it still runs. */
  async kill(): Promise<void> {
    if (!this.exitedYet) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/** An `oxy-client udp --listen` relay: one CONNECT-UDP flow that carries the datagrams
 * of a local UDP socket (any UDP client, an HTTP/3 client, sends to `port`). */
export interface UdpRelay {
  /** The local UDP port on 127.0.0.1. */
  port: number;
  /** The client's output so far, for assertion messages. */
  output(): string;
  /** Kills the client (ending the flow); resolves once it has exited. */
  close(): Promise<void>;
}

/** Starts `oxy-client udp --listen 127.0.0.1:0` and resolves once it prints `listening on
 * ADDR` (the flow is open then); rejects if it exits first or takes over `timeoutMs`. */
export function startUdpRelay(options: UdpOptions, timeoutMs = 10_000): Promise<UdpRelay> {
  const child = spawn(binaryPath("oxy-client"), [...udpArgs(options), "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "" },
  });
  children.add(child);
  let out = "";
  const exited = new Promise<void>((ok) =>
    child.on("exit", () => {
      children.delete(child);
      ok();
    }),
  );
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  };
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      void close();
      fail(new Error(`oxy-client udp --listen: not listening after ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    const onData = () => {
      const m = out.match(/listening on 127\.0\.0\.1:(\d+)/);
      if (!m) return;
      clearTimeout(timer);
      child.stdout!.off("data", onData);
      ok({ port: Number(m[1]), output: () => out, close });
    };
    child.stdout!.on("data", onData);
    void exited.then(() => {
      clearTimeout(timer);
      fail(new Error(`oxy-client udp --listen exited ${child.exitCode ?? child.signalCode}:\n${out}`));
    });
  });
}
