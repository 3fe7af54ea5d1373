// CONNECT-IP through an application's hooks (the fixture app): the request hook sees the
// CONNECT-IP request and can block it; the IP flow hook decides each flow of the stream
// (drop one destination, forward the rest) and keeps one state per stream; the egress
// hook redirects the UDP flows an IP flow becomes.

import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { after, before, describe, test } from "node:test";
import {
  TCP_RST,
  TCP_SYN,
  icmpEchoRequest,
  openConnectIp,
  scopePath,
  tcpSegment,
  udpPacket,
  type ConnectIpStream,
} from "../lib/connect-ip.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { OxyProcess } from "../lib/oxy.ts";
import { startUdpEcho, type UdpEcho } from "../lib/udp-echo.ts";

let echo: UdpEcho;
let tcpEcho: EchoServer;
let oxy: OxyProcess;

describe("CONNECT-IP and the application's hooks", () => {
  before(async () => {
    echo = await startUdpEcho();
    tcpEcho = await startEchoServer();
    oxy = await OxyProcess.start({
      binary: "fixture-app",
      settings: {
        egress: { allow: ["127.0.0.1/32"] },
        endpoints: [
          {
            name: "ip",
            listen: ["127.0.0.1:0"],
            http: { connect_ip: { enabled: true } },
            app: {
              block_path_prefix: "/.well-known/masque/ip/192.0.2.0%2F24/",
              ip_drop_destination: "127.0.0.9",
              // 127.0.0.8 is not in egress.allow: the egress hook sends UDP flows to the echo.
              egress_udp_target: `127.0.0.1:${echo.port}`,
            },
          },
          {
            name: "plain",
            listen: ["127.0.0.1:0"],
            http: { connect_ip: { enabled: true } },
            ip: { max_tcp_flows: 1, max_echo_flows: 1 },
          },
        ],
      },
    });
  });

  after(async () => {
    try {
      if (oxy) assert.deepEqual(await oxy.stop(), { code: 0, signal: null }, oxy.logs());
    } finally {
      await echo?.close();
      await tcpEcho?.close();
    }
  });

  test("the request hook blocks a CONNECT-IP request by its path (403), over HTTP/2 and HTTP/1.1", async () => {
    for (const over of ["h2", "h1"] as const) {
      const s = await openConnectIp({ over, port: oxy.port("ip"), path: scopePath("192.0.2.0/24", "*") });
      try {
        await s.closed();
        assert.equal(s.status, 403, s.body);
      } finally {
        s.destroy();
      }
    }
    assert.equal(await oxy.metric('oxy_ip_addresses_in_use{endpoint="ip",family="ipv4"}'), 0);
  });

  test("the IP flow hook drops one destination; other flows are redirected by the egress hook and echoed", async () => {
    const s: ConnectIpStream = await openConnectIp({ over: "h2", port: oxy.port("ip") });
    try {
      assert.equal(s.status, 200, s.body);
      await s.initial();
      const dropped = Buffer.from("to a dropped destination");
      s.sendPacket(udpPacket({ src: s.address(4), dst: "127.0.0.9", srcPort: 41001, dstPort: 7, payload: dropped }));
      const payload = Buffer.from("redirected by the egress hook");
      s.sendPacket(udpPacket({ src: s.address(4), dst: "127.0.0.8", srcPort: 41002, dstPort: 7, payload }));
      const echoed = await s.nextPacket((p) => p.udp?.data.equals(payload) === true, "the echo");
      // The reply comes from the flow's destination, whatever the egress hook chose.
      assert.equal(echoed.src, "127.0.0.8");
      assert.equal(echoed.udp?.srcPort, 7);
      await oxy.waitForMetric('oxy_ip_dropped_total{endpoint="ip",reason="hook"}', 1);
      assert.ok(!echo.received.some((d) => d.equals(dropped)), "nothing reached the echo for the dropped flow");
      assert.ok(!s.packets.some((p) => p.includes(dropped)), "no answer for the dropped flow");
      await s.end();
    } finally {
      s.destroy();
    }
    assert.equal(await oxy.metric('oxy_ip_flows_total{action="drop",endpoint="ip",protocol="udp"}'), 1);
    assert.equal(await oxy.metric('oxy_ip_flows_total{action="forward",endpoint="ip",protocol="udp"}'), 1);
    // One IpTunnelContext per stream: the fixture numbers each stream's flows from 1.
    assert.match(oxy.logs(), /fixture saw an IP flow flow=1 protocol=17 source=100\.64\.0\.\d+ destination=127\.0\.0\.9/);
    assert.match(oxy.logs(), /fixture saw an IP flow flow=2 protocol=17 source=100\.64\.0\.\d+ destination=127\.0\.0\.8/);
  });

  test("a UDP port that refuses is answered with ICMP port unreachable, quoting the flow", async () => {
    // A socket connected elsewhere holds the port; datagrams from anyone else are refused
    // by the kernel (ICMP port unreachable), which reaches Oxy's off-ramp socket.
    const holder = createSocket("udp4");
    await new Promise<void>((resolve) => holder.bind(0, "127.0.0.1", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      holder.once("error", reject);
      holder.connect(9, "127.0.0.2", () => resolve());
    });
    const port = holder.address().port;
    const s = await openConnectIp({ over: "h2", port: oxy.port("plain") });
    try {
      assert.equal(s.status, 200, s.body);
      await s.initial();
      const error = await (async () => {
        // The kernel answers each datagram; Oxy answers each refusal it sees.
        for (let i = 0; ; i++) {
          s.sendPacket(udpPacket({ src: s.address(4), dst: "127.0.0.1", srcPort: 41003, dstPort: port, payload: Buffer.from(`knock ${i}`) }));
          try {
            return await s.nextPacket((p) => p.icmp !== undefined, "ICMP port unreachable", 1_000);
          } catch (e) {
            if (i >= 4) throw e;
          }
        }
      })();
      assert.deepEqual([error.icmp!.type, error.icmp!.code], [3, 3]);
      assert.equal(error.src, "127.0.0.1");
      assert.equal(error.dst, s.address(4));
      // The quote carries the flow's addresses and ports, as the client's stack matches it.
      const quote = error.icmp!.body;
      assert.equal(quote.readUInt16BE(20), 41003);
      assert.equal(quote.readUInt16BE(22), port);
      await s.end();
    } finally {
      s.destroy();
      holder.close();
    }
    assert.ok((await oxy.metric('oxy_ip_icmp_generated_total{endpoint="plain",kind="port_unreachable"}'))! >= 1);
  });

  test("ip.max_tcp_flows and ip.max_echo_flows: one more connection gets a reset, one more echo identifier is dropped", async () => {
    const s = await openConnectIp({ over: "h2", port: oxy.port("plain") });
    try {
      assert.equal(s.status, 200, s.body);
      await s.initial();
      const src = s.address(4);
      // The first ping identifier is answered; a second one, while the first is tracked, is not.
      s.sendPacket(icmpEchoRequest({ src, dst: "127.0.0.1", id: 101, seq: 1, data: Buffer.from("first") }));
      await s.nextPacket((p) => p.icmp?.type === 0, "the echo reply");
      s.sendPacket(icmpEchoRequest({ src, dst: "127.0.0.1", id: 102, seq: 1, data: Buffer.from("second") }));
      await oxy.waitForMetric('oxy_ip_dropped_total{endpoint="plain",reason="too_many_echo_flows"}', 1);
      // The first connection attempt gets its SYN-ACK; a second one, a reset.
      const syn = (srcPort: number) => tcpSegment({ src, dst: "127.0.0.1", srcPort, dstPort: tcpEcho.port, seq: 1000, flags: TCP_SYN });
      s.sendPacket(syn(45001));
      await s.nextPacket((p) => p.tcp?.dstPort === 45001 && (p.tcp.flags & TCP_SYN) !== 0, "the SYN-ACK");
      s.sendPacket(syn(45002));
      const reset = await s.nextPacket((p) => p.tcp?.dstPort === 45002, "an answer to the second SYN");
      assert.ok((reset.tcp!.flags & TCP_RST) !== 0, `flags ${reset.tcp!.flags}`);
      await s.end();
    } finally {
      s.destroy();
    }
  });
});
