// Raw HTTP/1.1 requests to a proxy on fresh connections: a CONNECT (or any request head)
// and its answer, read whole (a refusal's body by its Content-Length), failing if the
// proxy closes first.

import { connect, type Socket } from "node:net";

/** A `Proxy-Authorization` value for `user:password`. */
export const basicAuth = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

export interface ProxyReply {
  status: number;
  /** The response head, without its blank line. */
  head: string;
  /** A non-2xx answer's body; empty after a 2xx. */
  body: string;
  /** The open tunnel (or connection) after a 2xx, or the closed socket. */
  socket: Socket;
}

/** Sends `head` (a whole request head) on a fresh connection to `port` and reads the
 * answer: after a 2xx its head only (the socket stays open: a tunnel, or a response still
 * streaming), else its head and body (the socket is then closed). */
export function proxyRequest(port: number, head: string): Promise<ProxyReply> {
  return new Promise((ok, fail) => {
    const socket = connect(port, "127.0.0.1");
    socket.write(head);
    let data = Buffer.alloc(0);
    let done = false;
    const onData = (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const end = data.indexOf("\r\n\r\n");
      if (done || end < 0) return;
      const replyHead = data.subarray(0, end).toString();
      const status = Number(replyHead.split(" ")[1]);
      const length = Number(/^content-length:\s*(\d+)/im.exec(replyHead)?.[1] ?? 0);
      const body = data.subarray(end + 4);
      if (status >= 200 && status < 300) {
        done = true;
        socket.off("data", onData);
        return ok({ status, head: replyHead, body: "", socket });
      }
      if (body.length < length) return;
      done = true;
      socket.destroy();
      ok({ status, head: replyHead, body: body.subarray(0, length).toString(), socket });
    };
    socket.on("data", onData);
    socket.on("error", (e) => done || fail(e));
    socket.on("close", () => done || fail(new Error(`connection closed after ${JSON.stringify(data.toString())}`)));
  });
}

/** `CONNECT authority` (as `auth`'s user, when given) on a fresh connection to `port`. */
export function proxyConnect(port: number, authority: string, auth?: [string, string]): Promise<ProxyReply> {
  const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
  if (auth) lines.push(`Proxy-Authorization: ${basicAuth(...auth)}`);
  return proxyRequest(port, lines.join("\r\n") + "\r\n\r\n");
}
