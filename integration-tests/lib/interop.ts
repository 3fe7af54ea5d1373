// Runs the independent aioquic clients (interop/masque_client.py for CONNECT-UDP,
// connect_ip_client.py, h3_get.py for HTTP/3 GETs) from the integration tests' virtualenv (`python3 -m venv .venv && .venv/bin/pip install -r
// interop/requirements.txt`, which `make integration-test` does).

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { collectExit, repoRoot, track } from "./oxy.ts";

const testsDir = join(repoRoot, "integration-tests");

/** The virtualenv's Python (or OXY_INTEROP_PYTHON). */
export function interopPython(): string {
  const python = process.env.OXY_INTEROP_PYTHON ?? join(testsDir, ".venv", "bin", "python");
  if (!existsSync(python)) {
    throw new Error(`${python} is missing: cd integration-tests && python3 -m venv .venv && .venv/bin/pip install -r interop/requirements.txt`);
  }
  return python;
}

export interface MasqueOptions {
  /** The proxy's UDP port on 127.0.0.1 (SNI and :authority say localhost). */
  port: number;
  ca: string;
  /** The UDP target, `host:port`. */
  target: string;
  count?: number;
  size?: number;
  timeout?: number;
  /** Seconds to keep the flow open after the echoes (reports `proxy_closed`). */
  linger?: number;
  strayDatagram?: boolean;
  badContext?: boolean;
}

export interface MasqueResult {
  status: number;
  sent: number;
  received: number;
  alpn?: string;
  proxy_closed?: boolean;
  /** The client's log (stderr), for assertion messages. */
  log: string;
}

/** Runs masque_client.py; its JSON line and log. Throws if it exits non-zero. */
export function masqueClient(options: MasqueOptions, timeoutMs = 30_000): Promise<MasqueResult> {
  const args = [join(testsDir, "interop", "masque_client.py"), "--proxy", `127.0.0.1:${options.port}`, "--ca", options.ca, "--target", options.target];
  if (options.count !== undefined) args.push("--count", String(options.count));
  if (options.size !== undefined) args.push("--size", String(options.size));
  if (options.timeout !== undefined) args.push("--timeout", String(options.timeout));
  if (options.linger !== undefined) args.push("--linger", String(options.linger));
  if (options.strayDatagram) args.push("--stray-datagram");
  if (options.badContext) args.push("--bad-context");
  return runInteropScript(args, timeoutMs);
}

/** Runs an interop script (`args[0]`) with the virtualenv's Python: its last stdout line
 * parsed as JSON, with its stderr as `log`. Throws if it exits non-zero or prints no
 * JSON line. */
export async function runInteropScript(args: string[], timeoutMs: number): Promise<any> {
  const child = track(spawn(interopPython(), args, { stdio: ["ignore", "pipe", "pipe"] }));
  const { code, signal, stdout, stderr } = await collectExit(child, timeoutMs);
  const line = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || !line.startsWith("{")) {
    throw new Error(`${args[0].split("/").pop()} exited ${code ?? signal}:\n${stdout}${stderr}`);
  }
  return { ...JSON.parse(line), log: stderr };
}

export interface H3GetOptions {
  /** The UDP address to send to, `host:port`. */
  connect: string;
  /** SNI and `:authority` host. */
  serverName: string;
  authority?: string;
  ca: string;
  /** GET in order on one connection. */
  paths: string[];
  /** Seconds for the handshake and for each response. */
  timeout?: number;
  /** Offer only these TLS 1.3 cipher suites (aioquic's names); aioquic's list when absent. */
  cipherSuites?: ("AES_128_GCM_SHA256" | "AES_256_GCM_SHA384" | "CHACHA20_POLY1305_SHA256")[];
}

export interface H3Response {
  path: string;
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface H3GetResult {
  responses: H3Response[];
  /** Why the connection failed (exit 1), if it did. */
  error?: string;
  code: number | null;
  /** The client's log (stderr), for assertion messages. */
  log: string;
}

/** Runs h3_get.py (an aioquic HTTP/3 client): the responses it got, and its error when
 * the connection failed (it then exits 1). Throws on any other exit or a timeout. The
 * process is killed at the end of the test file if it still runs then. */
export async function h3Get(options: H3GetOptions, timeoutMs = 30_000): Promise<H3GetResult> {
  const args = [join(testsDir, "interop", "h3_get.py"), "--connect", options.connect, "--server-name", options.serverName, "--ca", options.ca];
  if (options.authority !== undefined) args.push("--authority", options.authority);
  if (options.timeout !== undefined) args.push("--timeout", String(options.timeout));
  for (const path of options.paths) args.push("--path", path);
  for (const suite of options.cipherSuites ?? []) args.push("--cipher-suite", suite);
  const child = track(spawn(interopPython(), args, { stdio: ["ignore", "pipe", "pipe"] }));
  const { code, signal, stdout, stderr } = await collectExit(child, timeoutMs);
  const lines = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  const error = lines.find((l) => "error" in l)?.error;
  if (!(code === 0 || (code === 1 && error !== undefined))) {
    throw new Error(`h3_get.py exited ${code ?? signal}:\n${stdout}${stderr}`);
  }
  return { responses: lines.filter((l) => !("error" in l)), error, code, log: stderr };
}
