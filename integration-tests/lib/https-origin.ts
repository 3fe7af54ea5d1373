// An HTTPS origin server on loopback (HTTP/2 and HTTP/1.1 by ALPN) that records every
// request it receives, for tests of TLS towards upstreams and of TLS interception.

import { readFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";

export interface SeenHttpsRequest {
  method: string;
  /** The request target as received (`/hello?x=1`). */
  path: string;
  /** `:authority` over HTTP/2, the Host header over HTTP/1.1. */
  authority: string;
  /** The request's headers (lowercase names; over HTTP/2 the pseudo-headers too). */
  headers: Record<string, string | string[] | undefined>;
  /** `2.0` or `1.1`. */
  httpVersion: string;
  /** The ALPN protocol the connection negotiated (`h2`, `http/1.1`), or "" without ALPN. */
  alpnProtocol: string;
  body: string;
}

export interface HttpsOrigin {
  port: number;
  /** Requests received whole (their body to the end), in order. */
  seen: SeenHttpsRequest[];
  /** Every request whose head arrived, whole or not (`METHOD path`), in order. */
  started: string[];
  /** TLS handshakes completed with this origin. */
  readonly handshakes: number;
  close(): Promise<void>;
}

/** Serves HTTPS on 127.0.0.1 (a port the kernel picks) with the certificate chain and key
 * at `cert` (`TestPki.server` fits); answers every request with 200 and JSON naming the
 * origin, method, path, HTTP version and ALPN protocol. */
export async function startHttpsOrigin(cert: { chain: string; key: string }, name = "https origin"): Promise<HttpsOrigin> {
  const seen: SeenHttpsRequest[] = [];
  const started: string[] = [];
  const sockets = new Set<Socket>();
  const state = { handshakes: 0 };
  const server = createSecureServer(
    { allowHTTP1: true, cert: readFileSync(cert.chain), key: readFileSync(cert.key) },
    (req: Http2ServerRequest, res: Http2ServerResponse) => {
      req.on("error", () => {});
      res.on("error", () => {});
      const h2 = req.httpVersion === "2.0";
      const alpn = h2 ? req.stream.session?.alpnProtocol : ((req as unknown as IncomingMessage).socket as TLSSocket).alpnProtocol;
      const method = req.method ?? "";
      const path = req.url ?? "";
      started.push(`${method} ${path}`);
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const headers = { ...req.headers };
        // A reset HTTP/2 stream also ends the request: one whose body falls short of its
        // content-length was cut off, not completed.
        const declared = headers["content-length"];
        const received = chunks.reduce((n, c) => n + c.length, 0);
        if (declared !== undefined && Number(declared) !== received) return;
        const request: SeenHttpsRequest = {
          method,
          path,
          authority: String((h2 ? headers[":authority"] : undefined) ?? headers.host ?? ""),
          headers,
          httpVersion: req.httpVersion,
          alpnProtocol: typeof alpn === "string" ? alpn : "",
          body: Buffer.concat(chunks).toString(),
        };
        seen.push(request);
        const body = JSON.stringify({ origin: name, method, path, httpVersion: request.httpVersion, alpnProtocol: request.alpnProtocol });
        res.writeHead(200, { "content-type": "application/json", "x-origin": name });
        res.end(body);
      });
    },
  );
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("secureConnection", () => (state.handshakes += 1));
  server.on("tlsClientError", () => {}); // a client that refuses our certificate
  server.on("sessionError", () => {});
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    started,
    get handshakes() {
      return state.handshakes;
    },
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
