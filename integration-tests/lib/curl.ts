// Runs curl and returns the status, HTTP version, body and errors of the last response.

import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface CurlResult {
  /** curl exited 0. */
  ok: boolean;
  /** curl's exit code. */
  code: number;
  /** The last response's status (0 when there was none). */
  status: number;
  /** The last response's HTTP version (`1.1`, `2`). */
  version: string;
  /** What curl wrote to stdout (headers too with `-D -`). */
  body: string;
  stderr: string;
}

export async function curl(args: string[]): Promise<CurlResult> {
  const parse = (stdout: string) => {
    const cut = stdout.lastIndexOf("\n");
    const [status, version] = stdout.slice(cut + 1).split(" ");
    return { status: Number(status) || 0, version: version ?? "", body: cut < 0 ? "" : stdout.slice(0, cut) };
  };
  try {
    const { stdout, stderr } = await run("curl", ["-sS", "-w", "\n%{http_code} %{http_version}", ...args], {
      timeout: 15_000,
      maxBuffer: 64 << 20,
    });
    return { ok: true, code: 0, ...parse(stdout), stderr };
  } catch (e: any) {
    return { ok: false, code: typeof e.code === "number" ? e.code : -1, ...parse(String(e.stdout ?? "")), stderr: String(e.stderr ?? e.message) };
  }
}

/** Splits curl `-D -` output into the last response's headers (lowercase names) and body;
 * through a CONNECT tunnel the proxy's answer to the CONNECT comes first. */
export function lastResponse(out: string): { headers: Record<string, string>; body: string } {
  let rest = out;
  let head = "";
  while (rest.startsWith("HTTP/")) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    head = rest.slice(0, end);
    rest = rest.slice(end + 4);
  }
  const headers: Record<string, string> = {};
  for (const line of head.split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { headers, body: rest };
}
