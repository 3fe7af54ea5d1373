// Test receivers that parse PROXY protocol v2 headers (TCP stream or per UDP datagram),
// record what they carried, and echo the payload (or answer one HTTP request).

import { createSocket } from "node:dgram";
import { createServer, type Socket } from "node:net";

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

export interface ProxyHeader {
  command: number;
  transport: "stream" | "datagram";
  source: string;
  destination: string;
  tlvs: Record<number, string>;
}

/** Parses a v2 header at the start of `data`; returns it and the bytes after it. */
export function parseV2(data: Buffer): { header: ProxyHeader; rest: Buffer } | undefined {
  if (data.length < 16 || !data.subarray(0, 12).equals(SIGNATURE)) return undefined;
  const length = data.readUInt16BE(14);
  if (data.length < 16 + length) return undefined;
  const family = data[13] >> 4;
  const transport = (data[13] & 0x0f) === 2 ? "datagram" : "stream";
  let offset = 16;
  let source = "";
  let destination = "";
  if (family === 1) {
    const ip = (o: number) => [...data.subarray(o, o + 4)].join(".");
    source = `${ip(16)}:${data.readUInt16BE(24)}`;
    destination = `${ip(20)}:${data.readUInt16BE(26)}`;
    offset = 28;
  } else if (family === 2) {
    const ip = (o: number) => [...Array(8).keys()].map((i) => data.readUInt16BE(o + i * 2).toString(16)).join(":");
    source = `[${ip(16)}]:${data.readUInt16BE(48)}`;
    destination = `[${ip(32)}]:${data.readUInt16BE(50)}`;
    offset = 52;
  }
  const tlvs: Record<number, string> = {};
  while (offset + 3 <= 16 + length) {
    const kind = data[offset];
    const len = data.readUInt16BE(offset + 1);
    tlvs[kind] = data.subarray(offset + 3, offset + 3 + len).toString();
    offset += 3 + len;
  }
  return { header: { command: data[12] & 0x0f, transport, source, destination, tlvs }, rest: data.subarray(16 + length) };
}

export interface Receiver {
  port: number;
  headers: ProxyHeader[];
  close(): Promise<void>;
}

/** A TCP receiver: reads the header, then echoes (`echo`) or answers one HTTP request
 * with the header as JSON (`http`). */
export async function startTcpReceiver(mode: "echo" | "http"): Promise<Receiver> {
  const headers: ProxyHeader[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buffer: Buffer = Buffer.alloc(0);
    let parsed: ProxyHeader | undefined;
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!parsed) {
        const result = parseV2(buffer);
        if (!result) return;
        parsed = result.header;
        headers.push(parsed);
        buffer = result.rest;
      }
      if (mode === "echo") {
        if (buffer.length) socket.write(buffer);
        buffer = Buffer.alloc(0);
      } else if (buffer.includes("\r\n\r\n")) {
        const body = JSON.stringify({ header: parsed, request: buffer.toString().split("\r\n")[0] });
        socket.end(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      }
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as { port: number }).port,
    headers,
    close: () =>
      new Promise((ok) => {
        for (const s of sockets) s.destroy();
        server.close(() => ok());
      }),
  };
}

/** A UDP receiver: each datagram starts with a header; the payload is echoed back. */
export async function startUdpReceiver(): Promise<Receiver> {
  const headers: ProxyHeader[] = [];
  const socket = createSocket("udp4");
  socket.on("message", (msg, rinfo) => {
    const result = parseV2(msg);
    if (!result) return;
    headers.push(result.header);
    socket.send(result.rest, rinfo.port, rinfo.address);
  });
  await new Promise<void>((ok) => socket.bind(0, "127.0.0.1", ok));
  return { port: socket.address().port, headers, close: () => new Promise((ok) => socket.close(() => ok())) };
}
