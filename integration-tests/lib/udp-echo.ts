// A UDP echo server on loopback, and a client helper, for UDP flow tests.

import { createSocket, type Socket } from "node:dgram";

export interface UdpEcho {
  port: number;
  clients: Set<string>;
  /** Every datagram received, in order. */
  received: Buffer[];
  close(): Promise<void>;
}

/** Echoes every datagram back to its sender; listens on `host` (127.0.0.1, or an IPv6
 * address such as ::1). */
export async function startUdpEcho(host = "127.0.0.1"): Promise<UdpEcho> {
  const socket: Socket = createSocket(host.includes(":") ? "udp6" : "udp4");
  const clients = new Set<string>();
  const received: Buffer[] = [];
  socket.on("message", (msg, rinfo) => {
    clients.add(`${rinfo.address}:${rinfo.port}`);
    received.push(msg);
    socket.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((ok) => socket.bind(0, host, ok));
  return { port: socket.address().port, clients, received, close: () => new Promise((ok) => socket.close(() => ok())) };
}

/** A client socket that sends to 127.0.0.1:port and collects replies. */
export async function udpClient(port: number) {
  const socket = createSocket("udp4");
  const replies: string[] = [];
  socket.on("message", (msg) => replies.push(msg.toString()));
  await new Promise<void>((ok) => socket.bind(0, "127.0.0.1", ok));
  return {
    replies,
    send: (text: string) => new Promise<void>((ok, fail) => socket.send(text, port, "127.0.0.1", (e) => (e ? fail(e) : ok()))),
    async waitFor(count: number, timeoutMs = 3_000) {
      const deadline = Date.now() + timeoutMs;
      while (replies.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return replies;
    },
    close: () => new Promise<void>((ok) => socket.close(() => ok())),
  };
}
