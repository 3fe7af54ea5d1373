// The seccomp allow-list (`security.seccomp`, `security.on_violation`): a request hook of
// the fixture app that calls execve is refused with EPERM, logged and counted (enforce,
// errno), or ends the process with status 159 (kill); with the filter off the exec really
// replaces the process, which shows that the filter is what stops it. Every thread runs
// under the filter except the restart launcher (`oxy-restart`), which must exec a
// successor.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { OxyProcess, binaryPath, runToExit, writeConfig } from "../lib/oxy.ts";

/** The path whose request makes the fixture app's hook exec /bin/true. */
const EXEC_PATH = "/exec";

function fixture(security: Record<string, string> = {}): Promise<OxyProcess> {
  return OxyProcess.start({
    binary: "fixture-app",
    expectSeccompViolations: true,
    settings: {
      security,
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], app: { exec_path: EXEC_PATH, respond_path: "/hello" } }],
    },
  });
}

/** `{comm, seccomp}` of every thread of process `pid` (`Seccomp:` of /proc/PID/task/TID/status). */
function threadSeccomp(pid: number): { tid: string; comm: string; seccomp: string }[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
    const seccomp = /^Seccomp:\s*(\d+)$/m.exec(status)?.[1] ?? "missing";
    const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
    return { tid, comm, seccomp };
  });
}

/** Asserts that every thread is filtered (Seccomp: 2, SECCOMP_MODE_FILTER) but the
 * restart launcher, which is not (Seccomp: 0). */
function assertOnlyLauncherUnfiltered(pid: number) {
  const threads = threadSeccomp(pid);
  const launchers = threads.filter((t) => t.comm === "oxy-restart");
  assert.equal(launchers.length, 1, `one oxy-restart thread: ${JSON.stringify(threads)}`);
  assert.equal(launchers[0].seccomp, "0", `the launcher is not filtered: ${JSON.stringify(threads)}`);
  const others = threads.filter((t) => t.comm !== "oxy-restart");
  assert.ok(others.length >= 2, `the main thread and runtime workers: ${JSON.stringify(threads)}`);
  for (const thread of others) assert.equal(thread.seccomp, "2", `every other thread is filtered: ${JSON.stringify(threads)}`);
}

test("enforce, errno (the defaults): execve fails with EPERM, is logged and counted, and the process serves on", async () => {
  const oxy = await fixture();
  const refused = await fetch(`${oxy.url("web")}${EXEC_PATH}`);
  assert.equal(refused.status, 500);
  assert.match(await refused.text(), /^exec refused: .*Operation not permitted/);
  const after = await fetch(`${oxy.url("web")}/hello`);
  assert.equal(after.status, 200, "the process still serves");
  await after.arrayBuffer();
  await oxy.waitForLog(/ERROR.*seccomp: a forbidden system call was refused \(EPERM\).*syscall="execve"/);
  await oxy.waitForMetric('oxy_seccomp_violations_total{syscall="execve"}', 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("every thread runs under the filter except the restart launcher", async () => {
  const oxy = await fixture();
  const pid = oxy.child.pid!;
  assert.equal(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0], binaryPath("fixture-app"), "the child is the binary, not a wrapper");
  assertOnlyLauncherUnfiltered(pid);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("log: every thread but the launcher is filtered too", async () => {
  const oxy = await fixture({ seccomp: "log" });
  assertOnlyLauncherUnfiltered(oxy.child.pid!);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("on_violation kill: execve ends the process with status 159 and a message on stderr", async () => {
  const oxy = await fixture({ on_violation: "kill" });
  await fetch(`${oxy.url("web")}${EXEC_PATH}`).then(
    (res) => assert.fail(`answered ${res.status}`),
    () => undefined, // the connection dies with the process
  );
  assert.deepEqual(await oxy.waitForExit(), { code: 159, signal: null });
  assert.match(oxy.logs(), /^oxy: seccomp: forbidden system call execve; exiting$/m);
});

test("off: the exec goes through (the process becomes /bin/true and exits 0)", async () => {
  const oxy = await fixture({ seccomp: "off" });
  await fetch(`${oxy.url("web")}${EXEC_PATH}`).then(
    (res) => assert.fail(`answered ${res.status}`),
    () => undefined, // /bin/true has replaced the process: the connection is gone
  );
  assert.deepEqual(await oxy.waitForExit(), { code: 0, signal: null });
  assert.doesNotMatch(oxy.logs(), /oxy::bootstrap: stopped/, "it did not shut down: /bin/true exited");
  assert.doesNotMatch(oxy.logs(), /seccomp/);
});

test("security.allow_syscalls adds calls by name; an unknown name is a settings error at its place", async () => {
  const path = writeConfig("security:\n  allow_syscalls: [inotify_init1, no_such_call]\n");
  const r = await runToExit("oxy", ["--check-config", "-c", path]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /security\.allow_syscalls\[1\]: no system call named "no_such_call"/);
  assert.doesNotMatch(r.stderr, /inotify_init1/);
  const good = writeConfig("security:\n  allow_syscalls: [inotify_init1]\n");
  assert.equal((await runToExit("oxy", ["--check-config", "-c", good])).code, 0);
});
