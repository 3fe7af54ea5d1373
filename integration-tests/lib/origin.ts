// An HTTP origin server on loopback that answers with what it received, for proxy tests.

import { createServer, type IncomingMessage, type Server } from "node:http";

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
  /** The address the request came from. */
  remote: string;
  /** The port it came from: one per upstream connection. */
  remotePort: number;
}

export interface Origin {
  port: number;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/** Answers every request with 200 and a JSON echo of it; `/slow` never answers, and
 * `/delay/MS…` answers after MS milliseconds. */
export async function startOrigin(): Promise<Origin> {
  const seen: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const request = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString(), remote: req.socket.remoteAddress ?? "", remotePort: req.socket.remotePort ?? 0 };
      seen.push(request);
      if (req.url === "/slow") return;
      const answer = () => {
        const body = JSON.stringify(request);
        res.writeHead(200, { "content-type": "application/json", "x-origin": "yes", connection: "x-hop", "x-hop": "1" });
        res.end(body);
      };
      const delay = /^\/delay\/(\d+)/.exec(request.url);
      if (delay) setTimeout(answer, Number(delay[1]));
      else answer();
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("no address");
  return {
    port: address.port,
    seen,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
