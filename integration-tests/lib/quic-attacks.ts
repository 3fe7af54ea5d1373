// Runs interop/h3_attacks.py (aioquic) from the integration tests' virtualenv: HTTP/3
// and QUIC attacks (oversized field sections, QPACK encoder-stream floods, HEADERS frames
// that never end, CONNECT-UDP floods, raw client Initials) with a JSON result each.

import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after } from "node:test";
import { interopPython } from "./interop.ts";
import { collectExit, repoRoot } from "./oxy.ts";

const script = join(repoRoot, "integration-tests", "interop", "h3_attacks.py");

/** Every script started here; whatever a failed test left running is killed at the end. */
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill("SIGKILL");
});

function start(command: string, args: (string | number)[]): ChildProcess {
  const child = spawn(interopPython(), [script, command, ...args.map(String)], { stdio: ["pipe", "pipe", "pipe"] });
  children.add(child);
  child.on("exit", () => children.delete(child));
  child.stdin!.on("error", () => {});
  return child;
}

/** Runs `h3_attacks.py command args...` to its end (killed after `timeoutMs`); its JSON
 * line. Throws, with the script's output, if it failed. */
export async function h3Attack<T = any>(command: string, args: (string | number)[], timeoutMs = 30_000): Promise<T> {
  const child = start(command, args);
  child.stdin!.end();
  const { code, signal, stdout, stderr } = await collectExit(child, timeoutMs);
  const line = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || !line.startsWith("{")) {
    throw new Error(`h3_attacks.py ${command} ${args.join(" ")} exited ${code ?? signal}:\n${stdout}${stderr}`);
  }
  return JSON.parse(line);
}

/** A running `h3_attacks.py connect-flood`: it prints a `settled` line while it holds
 * its requests open, and closes its connection when `release()` closes its stdin. */
export class HeldFlood {
  private out = "";
  private err = "";
  private readonly exited: Promise<number | null>;

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.on("data", (d) => (this.out += d));
    child.stderr!.on("data", (d) => (this.err += d));
    this.exited = new Promise((ok) => child.on("close", (code) => ok(code)));
  }

  static start(args: (string | number)[]): HeldFlood {
    return new HeldFlood(start("connect-flood", args));
  }

  private lines(): any[] {
    return this.out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l));
  }

  /** Waits for the `settled` line (the requests the server answered, those still
   * waiting for stream credit). */
  async settled(timeoutMs = 20_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.lines().find((l) => l.event === "settled");
      if (line) return line;
      if (Date.now() > deadline || this.child.exitCode !== null) {
        throw new Error(`connect-flood never settled:\n${this.out}${this.err}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Closes stdin: the script closes its connection and exits; its last line. */
  async release(timeoutMs = 10_000): Promise<any> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    const last = this.lines().pop();
    if (code !== 0 || last?.event !== "closed") throw new Error(`connect-flood exited ${code}:\n${this.out}${this.err}`);
    return last;
  }
}
