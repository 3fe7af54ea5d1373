// TCP echo servers on loopback for tunnel tests.

import { createServer, type Server, type Socket } from "node:net";

export interface EchoServer {
  port: number;
  connections: number;
  /** The remote address of every connection, in order. */
  peers: string[];
  /** How many connections are still open. */
  open: number;
  close(): Promise<void>;
}

/** Echoes every byte back and half-closes when the client does. */
export async function startEchoServer(host = "127.0.0.1"): Promise<EchoServer> {
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const peers: string[] = [];
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    state.connections += 1;
    peers.push(socket.remoteAddress ?? "");
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  await new Promise<void>((ok) => server.listen(0, host, ok));
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("no address");
  return {
    port: address.port,
    get connections() {
      return state.connections;
    },
    peers,
    get open() {
      return sockets.size;
    },
    close: () =>
      new Promise((ok) => {
        for (const s of sockets) s.destroy();
        server.close(() => ok());
      }),
  };
}
