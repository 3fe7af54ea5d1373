// A tiny authoritative DNS server on loopback UDP for tests: A and AAAA records from a
// map, NXDOMAIN for unknown names, and a count of the queries it answered.

import { createSocket, type Socket } from "node:dgram";
import { isIPv4, isIPv6 } from "node:net";

export interface DnsServer {
  port: number;
  queries: string[];
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

/** Serves `records` (name -> addresses) on 127.0.0.1; answers carry `ttl` seconds. */
export async function startDnsServer(records: Record<string, string[]>, ttl = 60): Promise<DnsServer> {
  const socket: Socket = createSocket("udp4");
  const queries: string[] = [];
  socket.on("message", (msg, rinfo) => {
    const reply = answer(msg, records, ttl, queries);
    if (reply) socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((ok) => socket.bind(0, "127.0.0.1", ok));
  return {
    port: socket.address().port,
    queries,
    close: () => new Promise((ok) => socket.close(() => ok())),
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
