// Layer 3 end to end, with real TUN devices in network namespaces of their own (needs
// root): `oxy-client ip` (CONNECT-IP over h2c, HTTP/1.1 and HTTP/3) in a client namespace
// reaching origins in the proxy's namespace with the kernel's own ping and curl; a
// destination outside egress.allow answered with ICMP "administratively prohibited";
// the TUN off-ramp (`ip.offramp: tun`); the TUN on-ramp (`protocol: tun`) with the
// fixture app's IP flow hook (decapsulated TCP, UDP upgraded to a tunnel, a dropped
// destination); and the check of a `protocol: tun` endpoint's settings.
//
// Every namespace is `oxyt-<pid>-<tag>`, every interface `ot<pid><tag>`; addresses are
// documentation or private ones, inside the namespaces only. Namespaces (with whatever
// runs in them) are deleted after each suite and at exit, and leftovers of earlier runs
// are deleted first.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { isIPv6 } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { auditPath, auditWhere, readAudit } from "../lib/audit.ts";
import { makePki, type TestPki } from "../lib/certs.ts";
import {
  Netns,
  cannotRun,
  curl,
  ifName,
  ping,
  startHttpOrigin,
  startOxyClient,
  startUdpEchoIn,
  sweepLeftovers,
  udpExchange,
  until,
  vethPair,
  type NsProcess,
  type NsServer,
} from "../lib/netns.ts";
import { OxyProcess, runToExit, writeConfig } from "../lib/oxy.ts";
import { exitOf } from "../lib/restarts.ts";

// The proxy's side: the veth address the client reaches it on, and the origins (on its
// loopback): allowed by egress.allow, and one outside it.
const ORIGIN4 = "198.51.100.1";
const ORIGIN6 = "2001:db8:100::1";
const FORBIDDEN4 = "203.0.113.5";
const EGRESS_ALLOW = ["198.51.100.0/24", "2001:db8:100::/64"];

/** Set when this machine cannot run these tests: every suite is then skipped with it. */
const skip = cannotRun();
if (!skip) sweepLeftovers();

// ---------------------------------------------------------------------------------------
// helpers

/** An IPv4 or IPv6 address as a number, and its width in bits. */
function ipBits(ip: string): [bigint, number] {
  if (!isIPv6(ip)) return [ip.split(".").reduce((n, octet) => (n << 8n) | BigInt(octet), 0n), 32];
  const [head, tail] = ip.split("::");
  const words = (part?: string) => (part ? part.split(":") : []);
  const missing = 8 - words(head).length - words(tail).length;
  const all = [...words(head), ...Array(tail === undefined ? 0 : missing).fill("0"), ...words(tail)];
  return [all.reduce((n, word) => (n << 16n) | BigInt(parseInt(word, 16)), 0n), 128];
}

/** Whether one of `routes` (`198.51.100.0/24`, `2001:db8::/32`) covers `ip`, of the same
 * family. */
function covers(routes: string[], ip: string): boolean {
  const [address, width] = ipBits(ip);
  return routes.some((route) => {
    const [net, length] = route.split("/");
    const [prefix, netWidth] = ipBits(net);
    const shift = BigInt(width - Number(length));
    return netWidth === width && address >> shift === prefix >> shift;
  });
}

/** A counter sample, 0 while it does not exist. */
async function counter(oxy: OxyProcess, sample: string): Promise<number> {
  return (await oxy.metric(sample)) ?? 0;
}

/** Waits until a counter sample reaches at least `value`. */
async function counterReaches(oxy: OxyProcess, sample: string, value: number): Promise<number> {
  let last = 0;
  return until(
    async () => ((last = await counter(oxy, sample)) >= value ? last : undefined),
    () => `${sample} >= ${value} (it is ${last})`,
  );
}

const flows = (endpoint: string, protocol: string, action = "forward") =>
  `oxy_ip_flows_total{action="${action}",endpoint="${endpoint}",protocol="${protocol}"}`;
const icmpGenerated = (endpoint: string, kind: string) => `oxy_ip_icmp_generated_total{endpoint="${endpoint}",kind="${kind}"}`;
const dropped = (endpoint: string, reason: string) => `oxy_ip_dropped_total{endpoint="${endpoint}",reason="${reason}"}`;
const inUse = (endpoint: string, family: string) => `oxy_ip_addresses_in_use{endpoint="${endpoint}",family="${family}"}`;

/** A proxy namespace and a client namespace joined by a veth pair (`proxy`/30 and the
 * next address), the origins' addresses on the proxy namespace's loopback. */
async function proxyAndClient(tag: string, proxyIp: string, clientIp: string, originAddresses: string[]) {
  const p = await Netns.create(`${tag}p`);
  const c = await Netns.create(`${tag}c`);
  const [pIf, cIf] = [ifName(`${tag}p`), ifName(`${tag}c`)];
  await vethPair(p, pIf, c, cIf);
  await p.addAddress(pIf, `${proxyIp}/30`);
  await c.addAddress(cIf, `${clientIp}/30`);
  for (const address of originAddresses) await p.addAddress("lo", `${address}/${address.includes(":") ? 128 : 32}`);
  return { p, c };
}

/** `oxy-client ip` in namespace `c`; waits for its JSON line and for the device to carry
 * the addresses it names. */
async function startIpClient(c: Netns, args: string[]): Promise<{ client: NsProcess; line: any }> {
  const client = startOxyClient(c, ["ip", ...args]);
  try {
    const line = await client.waitForJson((x) => "status" in x);
    const dev = args[args.indexOf("--tun") + 1];
    await until(
      async () => {
        const have = await c.addresses(dev);
        return have && line.addresses.every((a: string) => have.includes(a)) ? true : undefined;
      },
      `the addresses ${JSON.stringify(line.addresses)} on ${dev} in ${c.name}`,
    );
    return { client, line };
  } catch (e) {
    await client.kill();
    throw e;
  }
}

/** Kills an `oxy-client ip` and waits for its device to go. */
async function stopIpClient(c: Netns, client: NsProcess, dev: string) {
  await client.kill("SIGTERM");
  await until(async () => ((await c.hasDevice(dev)) ? undefined : true), `${dev} gone from ${c.name}`);
}

/** The assigned IPv4 and IPv6 address (no prefix length) of an `oxy-client ip` line. */
function assigned(line: any): { v4: string; v6: string } {
  const v4 = line.addresses.find((a: string) => !a.includes(":"));
  const v6 = line.addresses.find((a: string) => a.includes(":"));
  assert.match(v4 ?? "", /^100\.64\.\d+\.\d+\/32$/, JSON.stringify(line));
  assert.match(v6 ?? "", /^fd00:6f78::[0-9a-f:]+\/128$/, JSON.stringify(line));
  return { v4: v4.split("/")[0], v6: v6.split("/")[0] };
}

function assertPing(r: Awaited<ReturnType<typeof ping>>, count: number, what: string) {
  assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
  assert.deepEqual([r.transmitted, r.received], [count, count], `${what}: ${r.stdout}`);
}

// ---------------------------------------------------------------------------------------

describe("CONNECT-IP with oxy-client ip: a TUN device in a client namespace", { skip }, () => {
  let pki: TestPki;
  let ns: { p: Netns; c: Netns };
  let oxy: OxyProcess;
  let origin4: NsServer;
  let origin6: NsServer;
  let audit: string;
  const PROXY = "10.203.0.1";

  before(async () => {
    pki = makePki([], [PROXY]);
    ns = await proxyAndClient("a", PROXY, "10.203.0.2", [ORIGIN4, ORIGIN6]);
    [origin4, origin6] = await Promise.all([startHttpOrigin(ns.p, ORIGIN4, "origin v4"), startHttpOrigin(ns.p, ORIGIN6, "origin v6")]);
    audit = auditPath();
    const connect_ip = { enabled: true };
    oxy = await OxyProcess.start({
      binary: "oxy",
      netns: ns.p.name,
      settings: {
        egress: { allow: EGRESS_ALLOW },
        server: { shutdown_timeout: "3s" },
        telemetry: { audit: { path: audit } },
        endpoints: [
          { name: "h2c", listen: [`${PROXY}:0`], http: { connect_ip } },
          { name: "h1", listen: [`${PROXY}:0`], http: { connect_ip } },
          {
            name: "h3",
            listen: [`${PROXY}:0`],
            tls: { enabled: true, certificates: [pki.server] },
            // A killed client sends no CONNECTION_CLOSE: its session ends (and is
            // audited) when the connection has been idle this long.
            http: { connect_ip, h3: { enabled: true, idle_timeout: "3s" } },
          },
          { name: "routes", listen: [`${PROXY}:0`], http: { connect_ip } },
        ],
      },
    });
  });

  after(async () => {
    const stop = await oxy?.stop();
    await Promise.all([origin4?.close(), origin6?.close()]);
    ns?.c.destroy();
    ns?.p.destroy();
    if (stop) assert.deepEqual(stop, { code: 0, signal: null }, oxy.logs());
  });

  const transports = [
    { name: "h2c (HTTP/2 in the clear)", endpoint: "h2c", over: "h2", scheme: "http", status: 200, tag: "2" },
    { name: "HTTP/1.1 in the clear", endpoint: "h1", over: "h1", scheme: "http", status: 101, tag: "1" },
    { name: "HTTP/3 (QUIC, certificate for the proxy's IP address)", endpoint: "h3", over: "h3", scheme: "https", status: 200, tag: "3" },
  ] as const;

  for (const t of transports) {
    test(`${t.name}: assigned addresses and advertised routes on the device; kernel ping and curl over IPv4 and IPv6; metrics and audit`, async () => {
      const { c } = ns;
      const dev = ifName(`c${t.tag}`);
      const port = oxy.port(t.endpoint, t.over === "h3" ? "quic" : "tcp");
      const args = ["--proxy", `${t.scheme}://${PROXY}:${port}`, "--over", t.over, "--tun", dev];
      if (t.over === "h3") args.push("--ca", pki.ca);
      const before = {
        icmp: await counter(oxy, flows(t.endpoint, "icmp")),
        icmpv6: await counter(oxy, flows(t.endpoint, "icmpv6")),
        tcp: await counter(oxy, flows(t.endpoint, "tcp")),
      };
      const { client, line } = await startIpClient(c, args);
      let stopped = false;
      try {
        assert.equal(line.status, t.status, JSON.stringify(line));
        assert.equal(line.device, dev);
        const mine = assigned(line);
        // The advertised routes: the internet and egress.allow, without the proxy's own
        // address and without what the egress policy denies.
        for (const ip of [ORIGIN4, ORIGIN6, "1.1.1.1", "2606:4700::1"]) assert.ok(covers(line.routes, ip), `${ip} is routed: ${line.routes}`);
        for (const ip of [PROXY, FORBIDDEN4, "192.0.2.1", "2001:db8::1", "10.1.2.3", "fd00::1", "127.0.0.1"]) {
          assert.ok(!covers(line.routes, ip), `${ip} is not routed: ${line.routes}`);
        }
        // The kernel sends the origins' traffic through the device, from the assigned
        // addresses; the proxy itself is still reached over the veth.
        for (const [dst, src] of [
          [ORIGIN4, mine.v4],
          [ORIGIN6, mine.v6],
        ]) {
          const [route] = JSON.parse(await c.ip(["-j", "route", "get", dst]));
          assert.deepEqual([route.dev, route.prefsrc], [dev, src], JSON.stringify(route));
        }
        const [toProxy] = JSON.parse(await c.ip(["-j", "route", "get", PROXY]));
        assert.notEqual(toProxy.dev, dev);

        assertPing(await ping(c, ORIGIN4, 3), 3, `ping ${ORIGIN4}`);
        assertPing(await ping(c, ORIGIN6, 3), 3, `ping -6 ${ORIGIN6}`);

        const path = `/over-${t.endpoint}`;
        const got4 = await curl(c, ["-m", "10", `http://${ORIGIN4}:${origin4.port}${path}`]);
        assert.deepEqual([got4.code, got4.stdout], [0, `origin v4 ${path}`], got4.stderr);
        const got6 = await curl(c, ["-m", "10", "-g", `http://[${ORIGIN6}]:${origin6.port}${path}`]);
        assert.deepEqual([got6.code, got6.stdout], [0, `origin v6 ${path}`], got6.stderr);
        // The user-space off-ramp: the origins see Oxy's own connections, not the
        // tunnel's addresses.
        const seen4 = origin4.events().filter((e) => e.path === path);
        const seen6 = origin6.events().filter((e) => e.path === path);
        assert.equal(seen4.length, 1, JSON.stringify(origin4.events()));
        assert.equal(seen6.length, 1, JSON.stringify(origin6.events()));
        assert.notEqual(seen4[0].from, mine.v4);
        assert.notEqual(seen6[0].from, mine.v6);

        await counterReaches(oxy, flows(t.endpoint, "icmp"), before.icmp + 1);
        await counterReaches(oxy, flows(t.endpoint, "icmpv6"), before.icmpv6 + 1);
        await counterReaches(oxy, flows(t.endpoint, "tcp"), before.tcp + 2);
        assert.equal(await counter(oxy, inUse(t.endpoint, "ipv4")), 1);

        await stopIpClient(c, client, dev);
        stopped = true;
      } finally {
        if (!stopped) await client.kill();
      }

      // The stream's audit record once the client is gone (for HTTP/3, once the QUIC
      // connection has idled out).
      const [session] = await auditWhere(audit, (r) => r.endpoint === t.endpoint && r.protocol === "connect-ip", 1, 20_000);
      assert.equal(session.target, "/.well-known/masque/ip/*/*/", JSON.stringify(session));
      assert.match(session.client, /^10\.203\.0\.2:\d+$/, JSON.stringify(session));
      // Up: 6 echo requests and the two TCP connections; down: 6 echo replies and more.
      assert.ok(session.packets_up >= 6 + 2 * 3 && session.packets_down >= 6 + 2 * 2, JSON.stringify(session));
      assert.ok(session.bytes_down > 0 && session.bytes_up > 0, JSON.stringify(session));
      // Its flows are audited with it: ICMP echo and TCP to both origins.
      const expected = [`1 ${ORIGIN4}:0`, `58 [${ORIGIN6}]:0`, `6 ${ORIGIN4}:${origin4.port}`, `6 [${ORIGIN6}]:${origin6.port}`];
      const flowTuples = () => readAudit(audit).filter((r) => r.endpoint === t.endpoint && r.protocol === "ip").map((r) => `${r.flow.protocol} ${r.flow.destination}`);
      await until(() => (expected.every((e) => flowTuples().includes(e)) ? true : undefined), () => `flow records ${expected} in ${JSON.stringify(flowTuples())}`);
      await oxy.waitForMetric(inUse(t.endpoint, "ipv4"), 0);
      await oxy.waitForMetric(inUse(t.endpoint, "ipv6"), 0);
    });
  }

  test("a destination outside egress.allow, routed into the tunnel, is answered with ICMP administratively prohibited and never leaves", async () => {
    const { p, c } = ns;
    const dev = ifName("cr");
    const port = oxy.port("routes");
    // The proxy's namespace has no route at all towards it: nothing could leave.
    const noRoute = await p.exec("ip", ["route", "get", FORBIDDEN4]);
    assert.notEqual(noRoute.code, 0, noRoute.stdout);
    assert.match(noRoute.stderr, /unreachable/i);

    const prohibited = await counter(oxy, icmpGenerated("routes", "prohibited"));
    const { client, line } = await startIpClient(c, ["--proxy", `http://${PROXY}:${port}`, "--over", "h2", "--tun", dev, "--route", "203.0.113.0/24", "--route", "198.51.100.0/24"]);
    try {
      assert.deepEqual(line.routes, ["203.0.113.0/24", "198.51.100.0/24"]);
      const routed = await c.routes(dev);
      assert.ok(routed.includes("203.0.113.0/24") && routed.includes("198.51.100.0/24"), JSON.stringify(routed));

      const denied = await ping(c, FORBIDDEN4, 1);
      assert.equal(denied.received, 0, denied.stdout);
      assert.match(denied.stdout, new RegExp(`From ${FORBIDDEN4.replaceAll(".", "\\.")} icmp_seq=1 (Packet filtered|.*[Aa]dministratively prohibited)`), denied.stdout);
      await counterReaches(oxy, icmpGenerated("routes", "prohibited"), prohibited + 1);

      // A TCP connection is refused the same way: the kernel gives up at once.
      const tcp = await curl(c, ["-m", "10", `http://${FORBIDDEN4}:80/`]);
      assert.equal(tcp.code, 7, `curl exit ${tcp.code}: ${tcp.stderr}`);
      await counterReaches(oxy, icmpGenerated("routes", "prohibited"), prohibited + 2);

      // The allowed origin works through the same device.
      assertPing(await ping(c, ORIGIN4, 1), 1, `ping ${ORIGIN4}`);
      await stopIpClient(c, client, dev);
    } finally {
      await client.kill();
    }
  });
});

// ---------------------------------------------------------------------------------------

describe("CONNECT-IP with the TUN off-ramp (ip.offramp: tun)", { skip }, () => {
  let ns: { p: Netns; c: Netns };
  let oxy: OxyProcess;
  let origin4: NsServer;
  let forbidden: NsServer;
  let audit: string;
  const PROXY = "10.203.1.1";
  const offDev = ifName("o");

  before(async () => {
    // The forbidden address is local to the proxy's namespace here: a packet that got
    // through would be answered by its kernel, a connection seen by `forbidden`.
    ns = await proxyAndClient("b", PROXY, "10.203.1.2", [ORIGIN4, ORIGIN6, FORBIDDEN4]);
    [origin4, forbidden] = await Promise.all([startHttpOrigin(ns.p, ORIGIN4, "origin v4"), startHttpOrigin(ns.p, FORBIDDEN4, "forbidden")]);
    audit = auditPath();
    oxy = await OxyProcess.start({
      binary: "oxy",
      netns: ns.p.name,
      settings: {
        egress: { allow: EGRESS_ALLOW },
        server: { shutdown_timeout: "3s" },
        telemetry: { audit: { path: audit } },
        endpoints: [
          {
            name: "off",
            listen: [`${PROXY}:0`],
            http: { connect_ip: { enabled: true } },
            ip: { offramp: "tun", tun: { name: offDev, addresses: ["10.204.0.1/30"] } },
          },
        ],
      },
    });
  });

  after(async () => {
    const stop = await oxy?.stop();
    await Promise.all([origin4?.close(), forbidden?.close()]);
    ns?.c.destroy();
    ns?.p.destroy();
    if (stop) assert.deepEqual(stop, { code: 0, signal: null }, oxy.logs());
  });

  test("the off-ramp device carries the pools' routes; ping and curl reach the origin with the client's own address", async () => {
    const { p, c } = ns;
    assert.ok((await p.addresses(offDev))?.includes("10.204.0.1/30"), JSON.stringify(await p.addresses(offDev)));
    const routes = await p.routes(offDev);
    for (const pool of ["100.64.0.0/16", "fd00:6f78::/64"]) assert.ok(routes.includes(pool), `${pool} through ${offDev}: ${JSON.stringify(routes)}`);

    const dev = ifName("cb");
    const before = await counter(oxy, flows("off", "icmp"));
    const { client, line } = await startIpClient(c, ["--proxy", `http://${PROXY}:${oxy.port("off")}`, "--over", "h2", "--tun", dev]);
    try {
      const mine = assigned(line);
      assertPing(await ping(c, ORIGIN4, 3), 3, `ping ${ORIGIN4}`);
      assertPing(await ping(c, ORIGIN6, 3), 3, `ping -6 ${ORIGIN6}`);
      const got = await curl(c, ["-m", "10", `http://${ORIGIN4}:${origin4.port}/off-ramp`]);
      assert.deepEqual([got.code, got.stdout], [0, "origin v4 /off-ramp"], got.stderr);
      // Written to the device as they are: the origin sees the client's address.
      const [seen] = origin4.events().filter((e) => e.path === "/off-ramp");
      assert.equal(seen?.from, mine.v4, JSON.stringify(origin4.events()));
      await counterReaches(oxy, flows("off", "icmp"), before + 1);
      await stopIpClient(c, client, dev);
    } finally {
      await client.kill();
    }
    const [session] = await auditWhere(audit, (r) => r.endpoint === "off" && r.protocol === "connect-ip");
    assert.ok(session.packets_up >= 6 && session.packets_down >= 6, JSON.stringify(session));
  });

  // A regression test: the off-ramp once wrote forwarded flows to the device without the
  // egress policy's check, so 203.0.113.5 (outside egress.allow) was reached.
  test(
    "the egress policy holds on the TUN off-ramp: a destination outside egress.allow is prohibited, not written to the device",
    async () => {
      const { p, c } = ns;
      const dev = ifName("cx");
      const prohibited = await counter(oxy, icmpGenerated("off", "prohibited"));
      const written = async () => JSON.parse(await p.ip(["-j", "-s", "link", "show", "dev", offDev]))[0].stats64.rx.packets as number;
      const { client } = await startIpClient(c, ["--proxy", `http://${PROXY}:${oxy.port("off")}`, "--over", "h2", "--tun", dev, "--route", "203.0.113.0/24", "--route", "198.51.100.0/24"]);
      try {
        const writtenBefore = await written();
        const denied = await ping(c, FORBIDDEN4, 1);
        const tcp = await curl(c, ["-m", "5", `http://${FORBIDDEN4}:${forbidden.port}/leak`]);
        const leaks = {
          ping: `${denied.received} of 1 answered`,
          curl: `exit ${tcp.code}: ${JSON.stringify(tcp.stdout)}`,
          connectionsAtForbidden: forbidden.events().length,
          packetsWrittenToTheOffRampDevice: (await written()) - writtenBefore,
        };
        const summary = `${FORBIDDEN4} is outside egress.allow: ${JSON.stringify(leaks)}\n${denied.stdout}`;
        assert.equal(denied.received, 0, summary);
        assert.equal(leaks.connectionsAtForbidden, 0, summary);
        assert.equal(leaks.packetsWrittenToTheOffRampDevice, 0, summary);
        assert.match(denied.stdout, /Packet filtered|[Aa]dministratively prohibited/, summary);
        assert.equal(tcp.code, 7, summary);
        await counterReaches(oxy, icmpGenerated("off", "prohibited"), prohibited + 1);
        await stopIpClient(c, client, dev);
      } finally {
        await client.kill();
      }
    },
  );
});

// ---------------------------------------------------------------------------------------

describe("TUN on-ramp (protocol: tun) with the fixture app's IP flow hook", { skip }, () => {
  let t: Netns;
  let fixture: OxyProcess;
  let origin: NsServer;
  let udpEcho: NsServer;
  let audit: string;
  const dev = ifName("t");

  before(async () => {
    t = await Netns.create("t");
    [origin, udpEcho] = await Promise.all([startHttpOrigin(t, "127.0.0.1", "origin in T"), startUdpEchoIn(t, "127.0.0.1")]);
    audit = auditPath();
    fixture = await OxyProcess.start({
      binary: "fixture-app",
      netns: t.name,
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        server: { shutdown_timeout: "3s" },
        telemetry: { audit: { path: audit } },
        endpoints: [
          {
            name: "tun",
            protocol: "tun",
            ip: { tun: { name: dev, addresses: ["10.77.0.1/24"], routes: ["198.51.100.0/24"] } },
            app: {
              ip_drop_destination: "198.51.100.9",
              ip_upgrade_udp: true,
              ip_upgrade_tcp_port: 80,
              egress_target: `127.0.0.1:${origin.port}`,
              egress_udp_target: `127.0.0.1:${udpEcho.port}`,
              tunnel_decapsulate: true,
              respond_path: "/inside-ip",
            },
          },
        ],
      },
    });
  });

  after(async () => {
    const stop = await fixture?.stop();
    await Promise.all([origin?.close(), udpEcho?.close()]);
    t?.destroy();
    if (stop) assert.deepEqual(stop, { code: 0, signal: null }, fixture.logs());
  });

  test("the device is up with its address and routes; /endpoints names the tun endpoint", async () => {
    await until(async () => ((await t.addresses(dev))?.includes("10.77.0.1/24") ? true : undefined), `10.77.0.1/24 on ${dev}`);
    const routes = await t.routes(dev);
    assert.ok(routes.includes("198.51.100.0/24") && routes.includes("10.77.0.0/24"), JSON.stringify(routes));
    assert.equal(fixture.endpoint("tun").protocol, "tun");
    await fixture.waitForLog(new RegExp(`endpoint reading its TUN device endpoint=tun device=${dev}`));
  });

  test("TCP to port 80 becomes a decapsulated tunnel: the request hook answers one path itself and sends the others to the origin", async () => {
    const answered = await curl(t, ["-m", "10", "-i", "http://198.51.100.80/inside-ip"]);
    assert.equal(answered.code, 0, answered.stderr);
    assert.match(answered.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(answered.stdout, /\r\n\r\nhello from the fixture app\n?$/);
    await fixture.waitForLog(/fixture saw an IP flow flow=\d+ protocol=6 source=10\.77\.0\.1 destination=198\.51\.100\.80 port=Some\(80\)/);
    await fixture.waitForLog(/oxy::access: request method=GET uri=\/inside-ip version="1\.1" status=200/);
    assert.deepEqual(origin.events(), [], "the fixture answered /inside-ip itself");

    const proxied = await curl(t, ["-m", "10", "http://198.51.100.80/through-tun"]);
    assert.deepEqual([proxied.code, proxied.stdout], [0, "origin in T /through-tun"], proxied.stderr);
    const [request] = origin.events().filter((e) => e.path === "/through-tun");
    assert.ok(request, JSON.stringify(origin.events()));
    // The request went through the fixture's request hook (decapsulated), not as bytes.
    assert.equal(request.headers["x-fixture-request"], "seen", JSON.stringify(request));
    assert.equal(request.headers.host, "198.51.100.80");
    await fixture.waitForLog(/oxy::access: request method=GET uri=\/through-tun version="1\.1" status=200/);
    await counterReaches(fixture, flows("tun", "tcp", "upgrade_to_tcp"), 2);
    const records = await auditWhere(audit, (r) => r.endpoint === "tun" && r.protocol === "tcp" && r.close_reason === "decapsulated", 2);
    assert.ok(records.every((r) => r.target === `127.0.0.1:${origin.port}`), JSON.stringify(records));
  });

  test("UDP flows are upgraded to UDP tunnels: a datagram to 198.51.100.53:53 is echoed back", async () => {
    const reply = await udpExchange(t, "198.51.100.53", 53, "hello over the tun on-ramp");
    assert.deepEqual(reply, { from: "198.51.100.53:53", data: "hello over the tun on-ramp" });
    const [echoed] = udpEcho.events();
    assert.equal(echoed?.data, "hello over the tun on-ramp", JSON.stringify(udpEcho.events()));
    await fixture.waitForLog(/fixture saw an IP flow flow=\d+ protocol=17 source=10\.77\.0\.1 destination=198\.51\.100\.53 port=Some\(53\)/);
    await counterReaches(fixture, flows("tun", "udp", "upgrade_to_udp"), 1);
  });

  test("the hook drops flows to 198.51.100.9: the connection times out and the drops are counted", async () => {
    const before = await counter(fixture, dropped("tun", "hook"));
    const requests = origin.events().length;
    const attempt = curl(t, ["-m", "3", "http://198.51.100.9/"]);
    await counterReaches(fixture, dropped("tun", "hook"), before + 1);
    await fixture.waitForLog(/IP flow dropped by the hook reason=fixture drops this destination source=10\.77\.0\.1:\d+ destination=198\.51\.100\.9:80 protocol=6/);
    const r = await attempt;
    assert.equal(r.code, 28, `curl exit ${r.code} (28: timed out): ${r.stdout}${r.stderr}`);
    assert.equal(origin.events().length, requests, "nothing reached the origin");
    await counterReaches(fixture, flows("tun", "tcp", "drop"), 1);
  });
});

// ---------------------------------------------------------------------------------------

test("--check-config: a tun endpoint needs ip.tun.addresses and a device name of at most 15 bytes", async () => {
  const path = writeConfig(
    [
      "endpoints:",
      "  - name: no-address",
      "    protocol: tun",
      "    ip: { tun: { name: oxycheck0 } }",
      "  - name: long-name",
      "    protocol: tun",
      "    ip: { tun: { name: a-name-of-16-byt, addresses: [10.78.0.1/24] } }",
      "",
    ].join("\n"),
  );
  const r = await runToExit("oxy", ["--check-config", "--config", path]);
  const output = r.stdout + r.stderr;
  assert.equal(r.code, 2, output);
  assert.match(output, /endpoints\[0\]\.ip\.tun\.addresses: a tun endpoint's device needs at least one address/);
  assert.match(output, /endpoints\[1\]\.ip\.tun: tun\.name is longer than 15 bytes/);

  const good = writeConfig(
    ["endpoints:", "  - name: tun", "    protocol: tun", "    ip: { tun: { name: oxycheck0, addresses: [10.78.0.1/24] } }", ""].join("\n"),
  );
  const ok = await runToExit("oxy", ["--check-config", "--config", good]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
});

describe("a graceful restart hands the TUN device over", { skip }, () => {
  test("the successor reads the same device once the old process has let go of it", async (t) => {
    const ns = await Netns.create("r");
    t.after(() => ns.destroy());
    const origin = await startHttpOrigin(ns, "127.0.0.1", "origin in R");
    t.after(() => origin.close());
    const dev = ifName("r");
    const pidFile = join(mkdtempSync(join(tmpdir(), "oxy-tun-restart-")), "pid");
    const fixture = await OxyProcess.start({
      binary: "fixture-app",
      netns: ns.name,
      settings: {
        egress: { allow: ["127.0.0.0/8"] },
        server: { shutdown_timeout: "3s", pid_file: pidFile },
        endpoints: [
          {
            name: "tun",
            protocol: "tun",
            ip: { tun: { name: dev, addresses: ["10.78.0.1/24"], routes: ["198.51.100.0/24"] } },
            app: { ip_upgrade_tcp_port: 80, egress_target: `127.0.0.1:${origin.port}`, tunnel_decapsulate: true, respond_path: "/inside-ip" },
          },
        ],
      },
    });
    const pidOf = () => Number(readFileSync(pidFile, "utf8").trim());
    const oldPid = pidOf();
    let successor = 0;
    t.after(() => {
      fixture.child.kill("SIGKILL");
      if (successor > 0) {
        try {
          process.kill(successor, "SIGKILL");
        } catch {
          // already gone
        }
      }
    });
    const fetchInside = async () => {
      const answered = await curl(ns, ["-m", "10", "-i", "http://198.51.100.80/inside-ip"]);
      assert.equal(answered.code, 0, answered.stderr);
      assert.match(answered.stdout, /\r\n\r\nhello from the fixture app\n?$/);
    };
    await fetchInside();

    process.kill(oldPid, "SIGHUP");
    successor = await until(() => (pidOf() !== oldPid ? pidOf() : undefined), () => `a new pid in ${pidFile}\n${fixture.logs()}`, 20_000);
    await fixture.waitForLog(new RegExp(`restart: successor ready successor_pid=${successor}`));
    // The old process drains and exits; only the successor can answer from then on.
    // (Its stdout and stderr stay open: the successor shares them.)
    assert.deepEqual(await exitOf(fixture.child, 10_000), { code: 0, signal: null }, fixture.logs());
    await until(async () => ((await ns.addresses(dev))?.includes("10.78.0.1/24") ? true : undefined), `10.78.0.1/24 still on ${dev}`);
    await fetchInside();
    await fixture.waitForLog(/restarted: draining connections/);
    process.kill(successor, "SIGTERM");
    await until(() => (existsSync(`/proc/${successor}`) ? undefined : true), `the successor ${successor} exits on SIGTERM`, 10_000);
    successor = 0;
  });
});
