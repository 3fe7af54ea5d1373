// The egress hook sends traffic to internal services behind a PROXY protocol v2 header
// with the real client, the original destination and the application's TLVs.

import assert from "node:assert/strict";
import { test } from "node:test";
import { startTcpReceiver, startUdpReceiver } from "../lib/proxy-protocol-receiver.ts";
import { udpClient } from "../lib/udp-echo.ts";
import { curl } from "../lib/curl.ts";
import { OxyProcess, exchange } from "../lib/oxy.ts";

test("TCP tunnels, forwarded requests and UDP flows carry PROXY v2 metadata", async () => {
  const stream = await startTcpReceiver("echo");
  const web = await startTcpReceiver("http");
  const datagrams = await startUdpReceiver();
  const tlv = { internal_tlv: "tenant-42" };
  const oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [
        { name: "l4", protocol: "tcp", listen: ["127.0.0.1:0"], app: { internal_service: `127.0.0.1:${stream.port}`, ...tlv } },
        { name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true }, app: { internal_service: `127.0.0.1:${web.port}`, ...tlv } },
        { name: "dgram", protocol: "udp", listen: ["127.0.0.1:0"], app: { internal_service: `127.0.0.1:${datagrams.port}`, ...tlv } },
      ],
    },
  });
  const [l4, http, udp] = [oxy.port("l4"), oxy.port("web"), oxy.port("dgram")];

  assert.equal((await exchange(l4, "behind a header")).toString(), "behind a header");
  const tcpHeader = stream.headers.at(-1);
  assert.ok(tcpHeader);
  assert.equal(tcpHeader.transport, "stream");
  assert.match(tcpHeader.source, /^127\.0\.0\.1:\d+$/);
  assert.equal(tcpHeader.destination, `127.0.0.1:${l4}`);
  assert.equal(tcpHeader.tlvs[0xe0], "tenant-42");

  const response = await curl(["-x", `http://127.0.0.1:${http}`, "http://service.internal/path?x=1"]);
  assert.equal(response.status, 200, response.stderr);
  const answer = JSON.parse(response.body);
  assert.equal(answer.request, "GET /path?x=1 HTTP/1.1");
  assert.equal(answer.header.destination, `127.0.0.1:${http}`);
  assert.equal(answer.header.tlvs[0xe0], "tenant-42");

  const client = await udpClient(udp);
  await client.send("datagram one");
  await client.send("datagram two");
  assert.deepEqual(await client.waitFor(2), ["datagram one", "datagram two"]);
  assert.equal(datagrams.headers.length, 2);
  assert.equal(datagrams.headers[0].transport, "datagram");
  assert.equal(datagrams.headers[0].destination, `127.0.0.1:${udp}`);
  assert.equal(datagrams.headers[1].tlvs[0xe0], "tenant-42");
  await client.close();

  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  await stream.close();
  await web.close();
  await datagrams.close();
});
