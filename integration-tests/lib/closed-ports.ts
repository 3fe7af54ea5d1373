// Ports that are held, so that nothing else can take them while a test uses them, and
// that never serve: a TCP port that refuses every connection and a UDP port that never
// answers. No port is ever picked, closed and hoped to stay free.

import { spawn } from "node:child_process";
import { createSocket, type Socket as DgramSocket } from "node:dgram";
import { track } from "./oxy.ts";

/** A held port that does not serve. */
export interface ClosedPort {
  port: number;
  close(): Promise<void>;
}

/** Binds a TCP socket on `host` port 0 and never calls listen(): connections to its port
 * are refused (RST, ECONNREFUSED), and the port stays taken until close(). Node cannot
 * bind a TCP socket without listening, so a python3 child holds it; the child exits when
 * its stdin closes (at close(), or when this test process ends). */
export async function refusingTcpPort(host = "127.0.0.1"): Promise<ClosedPort> {
  const script = [
    "import socket, sys",
    "host = sys.argv[1]",
    "s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)",
    "s.bind((host, 0))",
    "print(s.getsockname()[1], flush=True)",
    "sys.stdin.read()",
  ].join("\n");
  const child = track(spawn("python3", ["-c", script, host], { stdio: ["pipe", "pipe", "pipe"] }));
  let out = "";
  let err = "";
  child.stderr!.on("data", (d) => (err += d));
  const port = await new Promise<number>((ok, fail) => {
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("\n")) ok(Number(out.trim()));
    });
    child.on("error", fail);
    child.on("exit", (code) => fail(new Error(`python3 exited ${code} before holding a port: ${err}`)));
  });
  const exited = new Promise<void>((ok) => child.on("close", () => ok()));
  return {
    port,
    close: async () => {
      child.stdin!.end();
      await exited;
    },
  };
}

/** A UDP socket on `host` port 0 that never answers and counts what reaches it; the port
 * stays taken until close(). A resolver that asks it gets no answer (a timeout). */
export async function silentUdpPort(host = "127.0.0.1"): Promise<ClosedPort & { received(): number }> {
  const socket: DgramSocket = createSocket(host.includes(":") ? "udp6" : "udp4");
  let received = 0;
  socket.on("message", () => (received += 1));
  await new Promise<void>((ok) => socket.bind(0, host, ok));
  return {
    port: socket.address().port,
    received: () => received,
    close: () => new Promise((ok) => socket.close(() => ok())),
  };
}
