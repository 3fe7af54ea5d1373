// Audit log files for tests: a fresh path, and waiting for records to appear in it.

import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sleep, until } from "./oxy.ts";

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

/** Every record in the audit log at `path` so far (none before it is written). */
export function readAudit(path: string): any[] {
  try {
    return readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

/** Waits until `count` records of the audit log at `path` match `where`; returns them. */
export function auditWhere(path: string, where: (r: any) => boolean, count = 1, timeoutMs = 10_000): Promise<any[]> {
  return until(
    () => {
      const records = readAudit(path).filter(where);
      return records.length >= count ? records : undefined;
    },
    () => `${count} matching audit records in:\n${readAudit(path).map((r) => JSON.stringify(r)).join("\n")}`,
    timeoutMs,
  );
}
