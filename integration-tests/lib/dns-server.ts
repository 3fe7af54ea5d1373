// A tiny authoritative DNS server for tests: A and AAAA records from a map, NXDOMAIN for
// unknown names, and a log of the queries it answered. It always listens on loopback UDP;
// given a certificate it also serves the same records over DNS over TLS (RFC 7858) and
// DNS over HTTPS (RFC 8484: HTTP/2, POST and GET on /dns-query).

import { createSocket, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createSecureServer } from "node:http2";
import { isIPv4, isIPv6, type AddressInfo, type Server, type Socket as TcpSocket } from "node:net";
import { createServer as createTlsServer, type TlsOptions } from "node:tls";

export interface DnsServer {
  port: number;
  queries: string[];
  close(): Promise<void>;
}

/** A DnsServer that also answers over TLS on `tlsPort` and over HTTPS on `httpsPort`. */
export interface EncryptedDnsServer extends DnsServer {
  tlsPort: number;
  httpsPort: number;
}

/** PEM file paths of the certificate chain and key for the encrypted transports; `TestPki.server` fits. */
export interface DnsCertificate {
  chain: string;
  key: string;
}

type Reply = (query: Buffer) => Buffer | undefined;

const TYPE_A = 1;
const TYPE_AAAA = 28;

/**
 * Serves `records` (name -> addresses) on 127.0.0.1; answers carry `ttl` seconds. With `tls`,
 * also on a DNS over TLS port and a DNS over HTTPS port; all transports log into `queries`.
 */
export async function startDnsServer(records: Record<string, string[]>, ttl?: number): Promise<DnsServer>;
export async function startDnsServer(records: Record<string, string[]>, ttl: number, tls: DnsCertificate): Promise<EncryptedDnsServer>;
export async function startDnsServer(records: Record<string, string[]>, ttl = 60, tls?: DnsCertificate): Promise<DnsServer | EncryptedDnsServer> {
  const socket: Socket = createSocket("udp4");
  const queries: string[] = [];
  const reply: Reply = (query) => answer(query, records, ttl, queries);
  socket.on("message", (msg, rinfo) => {
    const response = reply(msg);
    if (response) socket.send(response, rinfo.port, rinfo.address);
  });
  await new Promise<void>((ok) => socket.bind(0, "127.0.0.1", ok));
  const port = socket.address().port;
  const closeUdp = () => new Promise<void>((ok) => socket.close(() => ok()));
  if (!tls) return { port, queries, close: closeUdp };

  const options: TlsOptions = { cert: readFileSync(tls.chain), key: readFileSync(tls.key) };
  const dot = await listen(dotServer(options, reply));
  const doh = await listen(dohServer(options, reply));
  return {
    port,
    tlsPort: dot.port,
    httpsPort: doh.port,
    queries,
    close: async () => {
      await Promise.all([closeUdp(), dot.close(), doh.close()]);
    },
  };
}

/** DNS over TLS: messages carry a 2-byte length prefix as over TCP, several to a connection. */
function dotServer(options: TlsOptions, reply: Reply): Server {
  return createTlsServer(options, (conn) => {
    conn.on("error", () => {});
    let pending = Buffer.alloc(0);
    conn.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const query = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + query.length);
        const response = reply(query);
        if (!response) continue;
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(response.length);
        conn.write(Buffer.concat([prefix, response]));
      }
    });
  });
}

/** DNS over HTTPS: POST with an application/dns-message body, or GET with ?dns=<base64url>. */
function dohServer(options: TlsOptions, reply: Reply): Server {
  const server = createSecureServer(options);
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    const send = (query: Buffer) => {
      const response = reply(query);
      if (!response) return stream.respond({ ":status": 400 }, { endStream: true });
      stream.respond({ ":status": 200, "content-type": "application/dns-message", "content-length": response.length });
      stream.end(response);
    };
    const url = new URL(String(headers[":path"]), "https://dns.invalid");
    if (url.pathname !== "/dns-query") return stream.respond({ ":status": 404 }, { endStream: true });
    if (headers[":method"] === "GET") return send(Buffer.from(url.searchParams.get("dns") ?? "", "base64url"));
    if (headers[":method"] !== "POST") return stream.respond({ ":status": 405, allow: "GET, POST" }, { endStream: true });
    if (String(headers["content-type"]).split(";")[0].trim() !== "application/dns-message") {
      return stream.respond({ ":status": 415 }, { endStream: true });
    }
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => send(Buffer.concat(chunks)));
  });
  return server;
}

/** Listens on loopback port 0 (the kernel picks); close() also ends open connections, so it never waits on clients. */
async function listen(server: Server): Promise<{ port: number; close(): Promise<void> }> {
  const open = new Set<TcpSocket>();
  server.on("connection", (conn: TcpSocket) => {
    open.add(conn);
    conn.on("close", () => open.delete(conn));
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        for (const conn of open) conn.destroy();
      }),
  };
}

function answer(msg: Buffer, records: Record<string, string[]>, ttl: number, log: string[]): Buffer | undefined {
  if (msg.length < 12) return undefined;
  let offset = 12;
  const labels: string[] = [];
  while (offset < msg.length && msg[offset] !== 0) {
    const len = msg[offset];
    labels.push(msg.subarray(offset + 1, offset + 1 + len).toString("ascii"));
    offset += len + 1;
  }
  offset += 1;
  if (offset + 4 > msg.length) return undefined;
  const qtype = msg.readUInt16BE(offset);
  const questionEnd = offset + 4;
  const name = labels.join(".").toLowerCase();
  log.push(`${name}/${qtype === TYPE_A ? "A" : qtype === TYPE_AAAA ? "AAAA" : qtype}`);

  const known = records[name];
  const matching = (known ?? []).filter((ip) => (qtype === TYPE_A ? isIPv4(ip) : qtype === TYPE_AAAA ? isIPv6(ip) : false));
  const header = Buffer.alloc(12);
  msg.copy(header, 0, 0, 2); // id
  const rcode = known ? 0 : 3;
  header.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | rcode, 2); // QR, AA, RD copied
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(matching.length, 6);
  const parts = [header, msg.subarray(12, questionEnd)];
  for (const ip of matching) {
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question name
    rr.writeUInt16BE(qtype, 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(ttl, 6);
    const data = qtype === TYPE_A ? Buffer.from(ip.split(".").map(Number)) : ipv6Bytes(ip);
    rr.writeUInt16BE(data.length, 10);
    parts.push(rr, data);
  }
  return Buffer.concat(parts);
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
