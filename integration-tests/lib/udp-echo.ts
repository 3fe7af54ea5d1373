// A UDP echo server on loopback, and a client helper, for UDP flow tests.

import { createSocket, type Socket } from "node:dgram";

export interface UdpEcho {
  port: number;
  clients: Set<string>;
  close(): Promise<void>;
}

/** Echoes every datagram back to its sender. */
export async function startUdpEcho(): Promise<UdpEcho> {
  const socket: Socket = createSocket("udp4");
  const clients = new Set<string>();
  socket.on("message", (msg, rinfo) => {
    clients.add(`${rinfo.address}:${rinfo.port}`);
    socket.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((ok) => socket.bind(0, "127.0.0.1", ok));
  return { port: socket.address().port, clients, close: () => new Promise((ok) => socket.close(() => ok())) };
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
