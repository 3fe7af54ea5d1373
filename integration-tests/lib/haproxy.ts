// HAProxy for tests, on listening sockets that it inherits: a python3 wrapper binds and
// listens on 127.0.0.1 port 0 (or another address, inside a network namespace if asked),
// tells the ports, and execs `haproxy -db` with the sockets as fd 3, 4, ... (`bind fd@3`
// in the config). No port is picked ahead, and no wait is needed: the sockets listen
// before HAProxy starts, so connections made at once queue in their backlog until HAProxy
// accepts them (or are reset if it fails to start).

import { spawn } from "node:child_process";
import { track, writeConfig } from "./oxy.ts";

export interface Haproxy {
  /** The port of `bind fd@3`, `bind fd@4`, ... in order. */
  ports: number[];
  /** Everything HAProxy wrote so far. */
  output(): string;
  stop(): Promise<void>;
}

const WRAPPER = [
  "import fcntl, os, socket, sys",
  "host, count, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]",
  "held = []",
  "for _ in range(count):",
  "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
  "    s.bind((host, 0))",
  "    s.listen(128)",
  // Out of the way of fds 3.. first, so that no dup2 below closes another socket.
  "    held.append((fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100), s.getsockname()[1]))",
  "    s.close()",
  "for i, (fd, _) in enumerate(held):",
  "    os.dup2(fd, 3 + i)",
  "    os.close(fd)",
  "print(' '.join(str(port) for _, port in held), flush=True)",
  "os.execvp(argv[0], argv)",
].join("\n");

export interface HaproxyOptions {
  /** The IPv4 address the sockets are bound to (port 0); 127.0.0.1 by default. */
  host?: string;
  /** Run it inside this network namespace (`ip netns exec`, which execs the wrapper:
   * the child's pid is HAProxy's). */
  netns?: string;
}

/** Starts HAProxy with `listeners` inherited sockets; `config` uses `bind fd@3` and on. */
export async function startHaproxy(listeners: number, config: string, options: HaproxyOptions = {}): Promise<Haproxy> {
  const path = writeConfig(config, "haproxy.cfg");
  const command = ["python3", "-c", WRAPPER, options.host ?? "127.0.0.1", String(listeners), "haproxy", "-f", path, "-db"];
  if (options.netns) command.unshift("ip", "netns", "exec", options.netns);
  const child = track(spawn(command[0], command.slice(1), { stdio: ["ignore", "pipe", "pipe"] }));
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const closed = new Promise<void>((ok) => child.on("close", () => ok()));
  const ports = await new Promise<number[]>((ok, fail) => {
    const onData = () => {
      const cut = out.indexOf("\n");
      if (cut < 0) return;
      child.stdout!.off("data", onData);
      ok(out.slice(0, cut).trim().split(" ").map(Number));
    };
    child.stdout!.on("data", onData);
    child.on("error", fail);
    child.on("exit", (code) => fail(new Error(`haproxy exited ${code}:\n${out}`)));
  });
  if (ports.length !== listeners || ports.some((p) => !(p > 0))) throw new Error(`no ports from the wrapper: ${out}`);
  return {
    ports,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await closed;
    },
  };
}
