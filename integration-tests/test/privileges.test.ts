// Dropping root after binding (`security.user`, `security.group`): the process serves as
// that user and group (real, effective, saved and filesystem ids, no other groups), a
// privileged port bound before the drop keeps serving, and a user that does not exist is
// a settings error.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { Netns } from "../lib/netns.ts";
import { OxyProcess, runToExit, writeConfig } from "../lib/oxy.ts";

const isRoot = process.getuid?.() === 0;

/** An entry of /etc/passwd or /etc/group by name: its fields. */
function entry(file: string, name: string): string[] | undefined {
  return readFileSync(file, "utf8")
    .split("\n")
    .map((line) => line.split(":"))
    .find((fields) => fields[0] === name);
}

const nobody = entry("/etc/passwd", "nobody");
const nobodyUid = nobody?.[2];
/** `nogroup` when this system has it, else nobody's primary group by number. */
const group = entry("/etc/group", "nogroup") ? "nogroup" : nobody?.[3];
const groupId = group === "nogroup" ? entry("/etc/group", "nogroup")![2] : group;

/** Asserts that `Uid:`, `Gid:` (real, effective, saved, filesystem) and `Groups:` of
 * every thread of process `pid` (the restart launcher's too) are nobody's and group `gid`'s. */
function assertRunsAsNobody(pid: number, gid = groupId) {
  const threads = readdirSync(`/proc/${pid}/task`);
  assert.ok(threads.length >= 2, "the main thread and runtime workers");
  for (const tid of threads) {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
    const line = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1].trim().split(/\s+/);
    assert.deepEqual(line("Uid"), [nobodyUid, nobodyUid, nobodyUid, nobodyUid], status);
    assert.deepEqual(line("Gid"), [gid, gid, gid, gid], status);
    assert.deepEqual(line("Groups"), [gid], `only that group: ${status}`);
  }
}

function fixtureSettings(listen: string, security: Record<string, string | undefined> = { user: "nobody", group }) {
  return {
    security,
    endpoints: [{ name: "web", listen: [listen], app: { respond_path: "/hello" } }],
  };
}

test("security.user and group: the process serves as nobody", { skip: !isRoot ? "needs root" : !nobody && "no user nobody" }, async () => {
  const oxy = await OxyProcess.start({ binary: "fixture-app", settings: fixtureSettings("127.0.0.1:0") });
  assertRunsAsNobody(oxy.child.pid!);
  const res = await fetch(`${oxy.url("web")}/hello`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  await oxy.waitForLog(new RegExp(`running with dropped privileges uid=${nobodyUid} gid=${groupId}`));
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

/** Whether network namespaces can be made here (root and iproute2). */
function canMakeNamespaces(): boolean {
  try {
    execFileSync("sh", ["-c", "command -v ip && command -v curl"], { stdio: "ignore" });
    return isRoot && !!nobody;
  } catch {
    return false;
  }
}

test("a privileged port bound before the drop serves after it (port 80 in a fresh namespace); user alone means its primary group", { skip: !canMakeNamespaces() && "needs root, ip, curl and a user nobody" }, async () => {
  // A fresh namespace: port 80 is free there, whatever runs on this machine.
  const ns = await Netns.create("priv");
  const oxy = await OxyProcess.start({ binary: "fixture-app", netns: ns.name, settings: fixtureSettings("127.0.0.1:80", { user: "nobody" }) });
  assert.equal(oxy.address("web"), "127.0.0.1:80");
  assertRunsAsNobody(oxy.child.pid!, nobody![3]);
  const r = await ns.exec("curl", ["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:80/hello"]);
  assert.equal(r.stdout, "200", r.stderr);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  ns.destroy();
});

test("a user or group that does not exist is a settings error, with its line", async () => {
  const path = writeConfig("security:\n  user: no-such-user-xyz\n  group: no-such-group-xyz\n");
  const r = await runToExit("oxy", ["--check-config", "-c", path]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`${path}:2:9: security\\.user: no user named "no-such-user-xyz"`));
  assert.match(r.stderr, new RegExp(`${path}:3:10: security\\.group: no group named "no-such-group-xyz"`));
  assert.doesNotMatch(r.stderr, /panicked/);
});
