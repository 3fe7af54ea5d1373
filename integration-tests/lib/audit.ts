// Audit log files for tests: a fresh path, and waiting for records to appear in it.

import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sleep } from "./oxy.ts";

/** A path for an audit log in a fresh temp directory. */
export function auditPath(): string {
  return join(mkdtempSync(join(tmpdir(), "oxy-audit-")), "audit.jsonl");
}

/** Waits until the audit log at `path` holds `count` records, and returns them. */
export async function auditRecords(path: string, count: number): Promise<any[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    let lines: string[] = [];
    try {
      lines = readFileSync(path, "utf8").trim().split("\n").filter(Boolean);
    } catch {
      // not written yet
    }
    if (lines.length >= count) return lines.map((l) => JSON.parse(l));
    if (Date.now() > deadline) throw new Error(`${lines.length} audit records, wanted ${count}`);
    await sleep(25);
  }
}
