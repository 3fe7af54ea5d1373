// The egress-router example (examples/egress-router) with its shipped config,
// config/egress-router.yaml: per-user routes on the CONNECT / forward proxy endpoint, per-client
// routes on the L4 endpoint behind PROXY headers, per-destination chaining through an upstream
// proxy, the L4 firewall before any route, and the app's config errors. Only the listeners,
// the loopback services the config names, the audit path and the resolver (a loopback DNS
// server; Oxy never asks the system resolver) are adjusted for the test.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ProxyAgent, fetch as undiciFetch } from "undici";
import { parse } from "yaml";
import { auditPath, auditRecords } from "../lib/audit.ts";
import { curl } from "../lib/curl.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startEchoServer, type EchoServer } from "../lib/echo-server.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { startTcpReceiver, type Receiver } from "../lib/proxy-protocol-receiver.ts";
import { basicAuth, proxyConnect } from "../lib/proxy-connect.ts";
import { OxyProcess, exchange, repoRoot, runToExit, writeConfig } from "../lib/oxy.ts";

const SHIPPED = readFileSync(join(repoRoot, "config", "egress-router.yaml"), "utf8");

let origin: Origin;
let echo: EchoServer;
let receiver: Receiver;
let upstream: UpstreamProxy;
let dns: DnsServer;

before(async () => {
  origin = await startOrigin();
  echo = await startEchoServer();
  receiver = await startTcpReceiver("echo");
  dns = await startDnsServer({
    // Only alice's traffic to a partner name is resolved by the router (her route comes first).
    "api.partner.example": ["127.0.0.1"],
    "metadata.oxy.test": ["169.254.10.10"],
    // Denied by the firewall before resolution; were it resolved, it would be reachable.
    "x.internal.example": ["127.0.0.1"],
  });
  upstream = await startUpstreamProxy({
    "api.partner.example:443": echo.port,
    "www.partner.example:80": origin.port,
  });
});

after(async () => {
  await origin.close();
  await echo.close();
  await receiver.close();
  await upstream.close();
  await dns.close();
});

// ---------------------------------------------------------------------------------------------
// Helpers

interface UpstreamProxy {
  port: number;
  /** Every CONNECT the proxy received: its request line and headers (lower-case names). */
  requests: { line: string; headers: Record<string, string>; peer: string }[];
  close(): Promise<void>;
}

/** A tiny HTTP CONNECT proxy that tunnels each target `host:port` to the loopback port
 * `routes` maps it to (and answers 502 for any other target). */
async function startUpstreamProxy(routes: Record<string, number>): Promise<UpstreamProxy> {
  const requests: UpstreamProxy["requests"] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => {});
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      client.off("data", onData);
      client.pause();
      const [line, ...fields] = head.subarray(0, end).toString().split("\r\n");
      const rest = head.subarray(end + 4);
      const headers: Record<string, string> = {};
      for (const field of fields) {
        const colon = field.indexOf(":");
        headers[field.slice(0, colon).trim().toLowerCase()] = field.slice(colon + 1).trim();
      }
      requests.push({ line, headers, peer: client.remoteAddress ?? "" });
      const [method, target] = line.split(" ");
      const backend = routes[target];
      if (method !== "CONNECT" || backend === undefined) {
        client.end("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
      }
      const server = connect({ port: backend, host: "127.0.0.1", allowHalfOpen: true }, () => {
        client.write("HTTP/1.1 200 Connection established\r\n\r\n");
        if (rest.length) server.write(rest);
        client.pipe(server);
        server.pipe(client);
        client.resume();
      });
      sockets.add(server);
      server.on("close", () => sockets.delete(server));
      server.on("error", () => client.destroy());
    };
    client.on("data", onData);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as { port: number }).port,
    requests,
    close: () =>
      new Promise((ok) => {
        for (const s of sockets) s.destroy();
        server.close(() => ok());
      }),
  };
}

interface Router {
  oxy: OxyProcess;
  /** The `proxy` endpoint (HTTP, CONNECT, proxy_auth). */
  proxyPort: number;
  /** The `balanced` endpoint (L4, PROXY protocol required). */
  balancedPort: number;
  audit: string;
}

/** config/egress-router.yaml, parsed and adjusted for the test only: listeners on port 0
 * (the kernel picks), the test's servers in place of the loopback services the config
 * names, an absolute audit path (a relative one lands next to the temp config file), and
 * the test's DNS server as the resolver. Fails if the shipped config no longer names what
 * is replaced. */
function adjustedSettings(audit: string) {
  const s = parse(SHIPPED);
  assert.equal(s.telemetry.listen, "127.0.0.1:9090");
  s.telemetry.listen = "127.0.0.1:0";
  // Relative to the config file otherwise (the temp dir OxyProcess.start writes it to).
  assert.equal(s.telemetry.audit.path, "egress-audit.log");
  s.telemetry.audit.path = audit;
  const endpoint = (name: string) => s.endpoints.find((e: any) => e.name === name);
  assert.deepEqual(endpoint("proxy").listen, ["127.0.0.1:8080"]);
  // Forwarding and CONNECT are off by default: the shipped file turns them on.
  assert.deepEqual([endpoint("proxy").http.forward_proxy, endpoint("proxy").http.connect], [true, true]);
  endpoint("proxy").listen = ["127.0.0.1:0"];
  assert.deepEqual(endpoint("balanced").listen, ["127.0.0.1:9000"]);
  endpoint("balanced").listen = ["127.0.0.1:0"];
  assert.equal(endpoint("balanced").tcp.target, "127.0.0.1:7000");
  endpoint("balanced").tcp.target = `127.0.0.1:${echo.port}`;
  const route = (name: string) => s.app.routes.find((r: any) => r.name === name);
  assert.equal(route("office-reports").internal_service, "127.0.0.1:7100");
  route("office-reports").internal_service = `127.0.0.1:${receiver.port}`;
  assert.equal(route("partner").upstream_proxy, "127.0.0.1:3128");
  route("partner").upstream_proxy = `127.0.0.1:${upstream.port}`;
  assert.equal(s.dns, undefined, "the shipped config has no resolver of its own");
  s.dns = { groups: [{ name: "test", servers: [{ address: `127.0.0.1:${dns.port}` }] }] };
  return s;
}

/** Starts egress-router with the adjusted shipped config and waits for /health. */
async function startRouter(): Promise<Router> {
  const audit = auditPath();
  const oxy = await OxyProcess.start({ binary: "egress-router", settings: adjustedSettings(audit) });
  return { oxy, proxyPort: oxy.port("proxy"), balancedPort: oxy.port("balanced"), audit };
}

const basic = basicAuth;

/** Writes `payload` into an open tunnel, half-closes, and collects the reply until it closes. */
function roundTrip(socket: Socket, payload: string): Promise<string> {
  return new Promise((ok) => {
    const chunks: Buffer[] = [];
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", () => {});
    socket.on("close", () => ok(Buffer.concat(chunks).toString()));
    socket.end(payload);
  });
}

/** A PROXY protocol v2 header (PROXY command, TCP over IPv4). */
function v2Header(source: [string, number], destination: [string, number]): Buffer {
  const signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const addresses = Buffer.alloc(12);
  Buffer.from(source[0].split(".").map(Number)).copy(addresses, 0);
  Buffer.from(destination[0].split(".").map(Number)).copy(addresses, 4);
  addresses.writeUInt16BE(source[1], 8);
  addresses.writeUInt16BE(destination[1], 10);
  return Buffer.concat([signature, Buffer.from([0x21, 0x11, 0x00, 12]), addresses]);
}

/** The audit records of `path` once there are `count`, found by a predicate. */
async function auditRecord(path: string, count: number, predicate: (r: any) => boolean): Promise<any> {
  const records = await auditRecords(path, count);
  const found = records.filter(predicate);
  assert.equal(found.length, 1, `one matching record in ${JSON.stringify(records, null, 1)}`);
  return found[0];
}

// ---------------------------------------------------------------------------------------------
// Tests

test("per-user routes: alice leaves from 127.0.0.2 (bind_to), bob directly; no credentials get 407", async () => {
  const { oxy, proxyPort, audit } = await startRouter();
  const proxyUrl = (user: string, password: string) => `http://${user}:${password}@127.0.0.1:${proxyPort}`;

  // CONNECT tunnels (curl -p): the origin reports the address each connection came from.
  const alice = await curl(["-p", "-x", proxyUrl("alice", "alice-secret"), `http://127.0.0.1:${origin.port}/alice-tunnel`]);
  assert.equal(alice.status, 200, alice.stderr);
  assert.equal(JSON.parse(alice.body).remote, "127.0.0.2");
  const bob = await curl(["-p", "-x", proxyUrl("bob", "bob-secret"), `http://127.0.0.1:${origin.port}/bob-tunnel`]);
  assert.equal(bob.status, 200, bob.stderr);
  assert.equal(JSON.parse(bob.body).remote, "127.0.0.1");

  // Plain forward proxying (absolute-form): the same routes.
  const aliceForward = await curl(["-x", proxyUrl("alice", "alice-secret"), `http://127.0.0.1:${origin.port}/alice-forward`]);
  assert.equal(aliceForward.status, 200, aliceForward.stderr);
  assert.equal(JSON.parse(aliceForward.body).remote, "127.0.0.2");
  assert.equal(JSON.parse(aliceForward.body).headers["proxy-authorization"], undefined);
  const bobForward = await curl(["-x", proxyUrl("bob", "bob-secret"), `http://127.0.0.1:${origin.port}/bob-forward`]);
  assert.equal(bobForward.status, 200, bobForward.stderr);
  assert.equal(JSON.parse(bobForward.body).remote, "127.0.0.1");

  // undici's ProxyAgent with alice's token tunnels from her address too.
  const agent = new ProxyAgent({ uri: `http://127.0.0.1:${proxyPort}`, token: basic("alice", "alice-secret") });
  const viaUndici = await undiciFetch(`http://127.0.0.1:${origin.port}/alice-undici`, { dispatcher: agent });
  assert.equal(viaUndici.status, 200);
  assert.equal(JSON.parse(await viaUndici.text()).remote, "127.0.0.2");
  await agent.close();

  // Without (or with wrong) credentials: 407, and nothing reaches the origin.
  const seen = origin.seen.length;
  const anonymous = await curl(["-D", "-", "-x", `http://127.0.0.1:${proxyPort}`, `http://127.0.0.1:${origin.port}/anonymous`]);
  assert.equal(anonymous.status, 407);
  assert.match(anonymous.body, /^proxy-authenticate: Basic realm="egress-router"/im);
  assert.equal((await proxyConnect(proxyPort, `127.0.0.1:${origin.port}`)).status, 407);
  assert.equal((await proxyConnect(proxyPort, `127.0.0.1:${origin.port}`, ["alice", "bob-secret"])).status, 407);
  const anonymousTunnel = await curl(["-p", "-x", `http://127.0.0.1:${proxyPort}`, `http://127.0.0.1:${origin.port}/anonymous-tunnel`]);
  assert.notEqual(anonymousTunnel.code, 0);
  assert.match(anonymousTunnel.stderr, /407/);
  assert.equal(origin.seen.length, seen);

  assert.equal(await oxy.metric('egress_router_routed_total{route="alice-egress"}'), 3);
  assert.equal(await oxy.metric('egress_router_routed_total{route="direct"}'), 2);
  assert.equal(await oxy.metric("egress_router_denied_total"), undefined);

  // One audit record per tunnel (three): the user and the route taken.
  const records = await auditRecords(audit, 3);
  assert.equal(records.length, 3, JSON.stringify(records));
  const aliceRecords = records.filter((r) => r.user === "alice");
  assert.equal(aliceRecords.length, 2);
  for (const r of aliceRecords) {
    assert.equal(r.label, "route=alice-egress");
    assert.equal(r.endpoint, "proxy");
    assert.equal(r.target, `127.0.0.1:${origin.port}`);
    assert.equal(r.close_reason, "completed");
  }
  const bobRecord = records.find((r) => r.user === "bob");
  assert.equal(bobRecord?.label, "route=direct");
  assert.equal(bobRecord?.target, `127.0.0.1:${origin.port}`);
  assert.ok(bobRecord.bytes_down > 0);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("per-client routes on the L4 endpoint: office clients reach the internal service behind PROXY v2 with TLVs, others go direct", async () => {
  const { oxy, balancedPort, audit } = await startRouter();
  const headersBefore = receiver.headers.length;
  const echoBefore = echo.connections;

  // An office client (10.1.0.0/16) behind the balancer: the internal service gets a v2 header
  // naming it, the route (0xE0) and the (absent) proxy user (0xE1), then the client's bytes.
  const office = Buffer.concat([v2Header(["10.1.2.3", 5555], ["127.0.0.1", balancedPort]), Buffer.from("quarterly report")]);
  assert.equal((await exchange(balancedPort, office)).toString(), "quarterly report");
  assert.equal(receiver.headers.length, headersBefore + 1);
  const header = receiver.headers.at(-1)!;
  assert.equal(header.command, 1);
  assert.equal(header.transport, "stream");
  assert.equal(header.source, "10.1.2.3:5555");
  assert.equal(header.destination, `127.0.0.1:${balancedPort}`);
  assert.equal(header.tlvs[0xe0], "office-reports");
  assert.equal(header.tlvs[0xe1], "");
  assert.equal(echo.connections, echoBefore, "tcp.target was not used");

  // Another client (a v1 header from a raw socket): directly to tcp.target, with no header —
  // the echo server returns exactly the client's bytes.
  const other = await exchange(balancedPort, `PROXY TCP4 192.0.2.9 127.0.0.1 4444 ${balancedPort}\r\nplain bytes`);
  assert.equal(other.toString(), "plain bytes");
  assert.equal(echo.connections, echoBefore + 1);
  // Just outside the office network: direct as well.
  const outside = Buffer.concat([v2Header(["10.2.0.1", 6666], ["127.0.0.1", balancedPort]), Buffer.from("from 10.2")]);
  assert.equal((await exchange(balancedPort, outside)).toString(), "from 10.2");
  assert.equal(echo.connections, echoBefore + 2);
  assert.equal(receiver.headers.length, headersBefore + 1);

  // PROXY protocol is required on this endpoint: a connection without a header goes nowhere.
  assert.equal((await exchange(balancedPort, "no header")).length, 0);
  assert.equal(echo.connections, echoBefore + 2);

  assert.equal(await oxy.metric('egress_router_routed_total{route="office-reports"}'), 1);
  assert.equal(await oxy.metric('egress_router_routed_total{route="direct"}'), 2);

  const records = await auditRecords(audit, 3);
  const officeRecord = records.find((r) => r.original_client === "10.1.2.3:5555");
  assert.equal(officeRecord?.label, "route=office-reports");
  assert.equal(officeRecord.endpoint, "balanced");
  assert.equal(officeRecord.user, undefined);
  assert.equal(officeRecord.target, `127.0.0.1:${receiver.port}`);
  assert.equal(officeRecord.bytes_up, "quarterly report".length);
  for (const client of ["192.0.2.9:4444", "10.2.0.1:6666"]) {
    const record = records.find((r) => r.original_client === client);
    assert.equal(record?.label, "route=direct", client);
    assert.equal(record.target, `127.0.0.1:${echo.port}`);
    assert.match(record.client, /^127\.0\.0\.1:\d+$/);
  }
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("per-destination routes chain partner traffic through the upstream proxy with the route's credentials", async () => {
  const { oxy, proxyPort, audit } = await startRouter();
  const queriesBefore = dns.queries.length;
  const requestsBefore = upstream.requests.length;

  // A raw CONNECT as bob: the upstream proxy gets CONNECT with the router's credentials, and
  // bytes flow end to end (the upstream tunnels this target to the echo server).
  const reply = await proxyConnect(proxyPort, "api.partner.example:443", ["bob", "bob-secret"]);
  assert.equal(reply.status, 200, reply.head);
  assert.equal(await roundTrip(reply.socket, "partner payload"), "partner payload");
  const connect = upstream.requests[requestsBefore];
  assert.ok(connect, "the upstream proxy was asked");
  assert.equal(connect.line, "CONNECT api.partner.example:443 HTTP/1.1");
  assert.equal(connect.headers["proxy-authorization"], basic("router", "partner-secret"));
  assert.equal(connect.headers.host, "api.partner.example:443");
  assert.equal(connect.peer, "127.0.0.1");

  // curl -p (CONNECT) and absolute-form forwarding through the same chain, to the origin.
  const bobProxy = `http://bob:bob-secret@127.0.0.1:${proxyPort}`;
  const tunnelled = await curl(["-p", "-x", bobProxy, "http://www.partner.example/via-tunnel"]);
  assert.equal(tunnelled.status, 200, tunnelled.stderr);
  assert.equal(JSON.parse(tunnelled.body).url, "/via-tunnel");
  const forwarded = await curl(["-x", bobProxy, "http://www.partner.example/via-forward"]);
  assert.equal(forwarded.status, 200, forwarded.stderr);
  const seen = JSON.parse(forwarded.body);
  assert.equal(seen.url, "/via-forward");
  assert.equal(seen.headers.host, "www.partner.example");
  assert.equal(seen.headers["proxy-authorization"], undefined, "bob's credentials stay with the router");
  const chained = upstream.requests.slice(requestsBefore);
  assert.deepEqual(chained.map((r) => r.line), [
    "CONNECT api.partner.example:443 HTTP/1.1",
    "CONNECT www.partner.example:80 HTTP/1.1",
    "CONNECT www.partner.example:80 HTTP/1.1",
  ]);
  for (const r of chained) assert.equal(r.headers["proxy-authorization"], basic("router", "partner-secret"));
  // The router never resolved the partner names: the upstream proxy does.
  assert.deepEqual(dns.queries.slice(queriesBefore), []);
  assert.equal(await oxy.metric('egress_router_routed_total{route="partner"}'), 3);

  // Routes are tried in order: alice's route (bind_to) comes first, so her traffic to a
  // partner leaves directly from her address (resolved by the router), not via the partner.
  const alice = await curl(["-p", "-x", `http://alice:alice-secret@127.0.0.1:${proxyPort}`, `http://api.partner.example:${origin.port}/alice-partner`]);
  assert.equal(alice.status, 200, alice.stderr);
  assert.equal(JSON.parse(alice.body).remote, "127.0.0.2");
  assert.equal(upstream.requests.length, requestsBefore + 3);
  assert.ok(dns.queries.slice(queriesBefore).includes("api.partner.example/A"));

  const records = await auditRecords(audit, 3);
  const partner = records.filter((r) => r.label === "route=partner");
  assert.equal(partner.length, 2, JSON.stringify(records));
  const apiRecord = partner.find((r) => r.target === "api.partner.example:443");
  assert.equal(apiRecord?.user, "bob");
  assert.equal(apiRecord.resolved, `127.0.0.1:${upstream.port}`);
  assert.equal(apiRecord.bytes_up, "partner payload".length);
  assert.equal(apiRecord.bytes_down, "partner payload".length);
  const aliceRecord = records.find((r) => r.user === "alice");
  assert.equal(aliceRecord?.label, "route=alice-egress");
  assert.equal(aliceRecord.resolved, `127.0.0.1:${origin.port}`);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the L4 firewall refuses denied hosts, ports and networks before any route and any DNS query", async () => {
  const { oxy, proxyPort, audit } = await startRouter();
  const queriesBefore = dns.queries.length;
  const requestsBefore = upstream.requests.length;
  const bob: [string, string] = ["bob", "bob-secret"];
  const alice: [string, string] = ["alice", "alice-secret"];

  // Denied hosts: the domain and its subdomains, never resolved.
  for (const authority of ["x.internal.example:443", "internal.example:443", "A.B.Internal.Example:8443"]) {
    const r = await proxyConnect(proxyPort, authority, bob);
    assert.equal(r.status, 403, `${authority}: ${r.head}`);
    assert.match(r.body, new RegExp(`the L4 firewall does not allow ${authority.toLowerCase().replaceAll(".", "\\.")}`));
  }
  // A real client sees the same refusal.
  const viaCurl = await curl(["-p", "-x", `http://bob:bob-secret@127.0.0.1:${proxyPort}`, "http://x.internal.example:443/"]);
  assert.notEqual(viaCurl.code, 0);
  assert.match(viaCurl.stderr, /403/);
  // ...and so does a forwarded request.
  const forwarded = await curl(["-x", `http://alice:alice-secret@127.0.0.1:${proxyPort}`, "http://db.internal.example/"]);
  assert.equal(forwarded.status, 403);
  assert.match(forwarded.body, /the L4 firewall does not allow db\.internal\.example:80/);
  assert.deepEqual(dns.queries.slice(queriesBefore).filter((q) => q.includes("internal.example")), []);

  // Port 25, whatever the host (even for alice, whose route would bind it).
  const smtp = await proxyConnect(proxyPort, "127.0.0.1:25", alice);
  assert.equal(smtp.status, 403);
  assert.match(smtp.body, /egress denied by the application: the L4 firewall does not allow 127\.0\.0\.1:25/);
  // A partner on port 25 is denied before the partner route chains it.
  const partnerSmtp = await proxyConnect(proxyPort, "mx.partner.example:25", bob);
  assert.equal(partnerSmtp.status, 403);
  assert.equal(upstream.requests.length, requestsBefore, "the upstream proxy was never asked");

  // An address in a denied network: refused by the app (not only by egress.allow's policy).
  const linkLocal = await proxyConnect(proxyPort, "169.254.10.10:80", bob);
  assert.equal(linkLocal.status, 403);
  assert.match(linkLocal.body, /egress denied by the application: the L4 firewall does not allow 169\.254\.10\.10:80/);
  const deniedByHook = 8;
  assert.equal(await oxy.metric("egress_router_denied_total"), deniedByHook);

  // Not denied: a name merely ending like a denied domain resolves (NXDOMAIN here: 502).
  const lookalike = await proxyConnect(proxyPort, "notinternal.example:443", bob);
  assert.equal(lookalike.status, 502);
  assert.match(lookalike.body, /notinternal\.example has no address/);
  assert.ok(dns.queries.slice(queriesBefore).includes("notinternal.example/A"));

  // Every refusal has an audit record with its reason; the firewall runs before any route.
  const records = await auditRecords(audit, 8);
  const refusal = (target: string) => {
    const r = records.find((x) => x.target === target);
    assert.ok(r, `a record for ${target} in ${JSON.stringify(records, null, 1)}`);
    return r;
  };
  const internal = refusal("x.internal.example:443");
  assert.equal(internal.user, "bob");
  assert.equal(internal.resolved, null);
  assert.equal(internal.bytes_up, 0);
  assert.equal(internal.close_reason, "egress denied by the application: the L4 firewall does not allow x.internal.example:443");
  assert.equal(internal.label, undefined, "no route was chosen");
  assert.match(refusal("127.0.0.1:25").close_reason, /the L4 firewall does not allow 127\.0\.0\.1:25/);
  assert.equal(refusal("127.0.0.1:25").user, "alice");
  assert.match(refusal("mx.partner.example:25").close_reason, /the L4 firewall does not allow mx\.partner\.example:25/);
  assert.match(refusal("169.254.10.10:80").close_reason, /the L4 firewall does not allow 169\.254\.10\.10:80/);
  assert.equal(refusal("notinternal.example:443").label, "route=direct");
  assert.equal(records.length, 8, "no record for the forwarded request");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the L4 firewall: a CONNECT to a name that resolves into a denied network is refused as a firewall denial", async () => {
  const { oxy, proxyPort, audit } = await startRouter();
  const queriesBefore = dns.queries.length;
  const bob: [string, string] = ["bob", "bob-secret"];
  // A tunnel that connects, so that the connect counter has a baseline.
  const open = await proxyConnect(proxyPort, `127.0.0.1:${echo.port}`, bob);
  assert.equal(open.status, 200);
  assert.equal(await roundTrip(open.socket, "baseline"), "baseline");
  const connects = await oxy.metric('oxy_offramp_connects_total{family="ipv4"}');
  assert.equal(connects, 1);

  // metadata.oxy.test resolves (through the test's DNS server) to 169.254.10.10, in the
  // firewall's denied networks: on_resolved removes the address, so nothing is connected...
  const reply = await proxyConnect(proxyPort, "metadata.oxy.test:80", bob);
  assert.ok(dns.queries.slice(queriesBefore).includes("metadata.oxy.test/A"), "names are checked against networks once resolved");
  assert.equal(await oxy.metric('oxy_offramp_connects_total{family="ipv4"}'), connects, "nothing was connected");
  const records = await auditRecords(audit, 2);
  const record = records.find((r) => r.target === "metadata.oxy.test:80");
  assert.ok(record, JSON.stringify(records));
  assert.equal(record.resolved, null);
  assert.equal(record.bytes_up, 0);
  assert.equal(reply.body.includes("egress.allow"), false, "the app's firewall, not the framework's egress policy, refused it");
  // ...and the refusal is the firewall's: 403 like any other firewall denial (not a 502
  // "has no address": the name has one), counted in egress_router_denied_total, audited
  // with the reason.
  assert.equal(reply.status, 403, `${reply.head}\n\n${reply.body}`);
  assert.match(reply.body, /egress denied by the application/);
  assert.match(record.close_reason, /egress denied by the application/);
  assert.equal(await oxy.metric("egress_router_denied_total"), 1);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the L4 firewall: a forwarded request to a name that resolves into a denied network meets the firewall's networks", async () => {
  const { oxy, proxyPort } = await startRouter();
  const queriesBefore = dns.queries.length;
  // As for CONNECT, the egress hook's on_resolved should see (and remove) 169.254.10.10.
  const r = await curl(["-x", `http://bob:bob-secret@127.0.0.1:${proxyPort}`, "http://metadata.oxy.test/latest"]);
  assert.ok(dns.queries.slice(queriesBefore).includes("metadata.oxy.test/A"));
  assert.equal(r.status, 403, r.body);
  assert.match(r.body, /egress denied by the application/, "refused by the app's firewall (on_resolved), not only by egress.allow's policy");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("the L4 firewall: a trailing dot does not get a forwarded request past the denied hosts", async () => {
  const { oxy, proxyPort } = await startRouter();
  const queriesBefore = dns.queries.length;
  const seenBefore = origin.seen.length;
  const bobProxy = `http://bob:bob-secret@127.0.0.1:${proxyPort}`;
  // CONNECT refuses the fully qualified form outright.
  const tunnel = await proxyConnect(proxyPort, `x.internal.example.:${origin.port}`, ["bob", "bob-secret"]);
  assert.ok(tunnel.status >= 400 && tunnel.status < 500, tunnel.head);
  // `x.internal.example.` is the same host as `x.internal.example` (the DNS server answers
  // 127.0.0.1 for it): a forwarded request to it must be refused like one without the dot.
  for (const host of ["x.internal.example.", "X.Internal.Example."]) {
    const r = await curl(["-x", bobProxy, `http://${host}:${origin.port}/trailing-dot`]);
    assert.ok(r.status === 403 || r.status === 400, `${host}: ${r.status} ${r.body}`);
  }
  assert.equal(origin.seen.length, seenBefore, "the denied host was never reached");
  assert.deepEqual(dns.queries.slice(queriesBefore).filter((q) => q.includes("internal.example")), [], "denied names are not resolved");
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("config errors: a route with two egresses is a settings error (exit 2), also for --check-config; --generate-config documents routes and firewall", async () => {
  const settings = adjustedSettings(auditPath());
  // Written once the telemetry listener is bound: never, if nothing starts.
  const addressFile = join(mkdtempSync(join(tmpdir(), "oxy-test-")), "telemetry-address");
  settings.telemetry.address_file = addressFile;
  const alice = settings.app.routes.find((r: any) => r.name === "alice-egress");
  alice.upstream_proxy = `127.0.0.1:${upstream.port}`;
  const path = writeConfig(settings);
  const run = await runToExit("egress-router", ["--config", path]);
  assert.equal(run.code, 2, run.stderr);
  assert.match(run.stderr, /: app\.routes\[\d+\]: route alice-egress: set one of bind_to, upstream_proxy and internal_service/);
  const checked = await runToExit("egress-router", ["--check-config", "--config", path]);
  assert.equal(checked.code, 2, checked.stderr);
  assert.match(checked.stderr, /route alice-egress: set one of/);
  assert.equal(existsSync(addressFile), false, "nothing was bound");

  // The shipped config itself is valid.
  const shipped = await runToExit("egress-router", ["--check-config", "--config", join(repoRoot, "config", "egress-router.yaml")]);
  assert.equal(shipped.code, 0, shipped.stderr);

  const generated = await runToExit("egress-router", ["--generate-config"]);
  assert.equal(generated.code, 0, generated.stderr);
  const doc = generated.stdout;
  assert.match(doc, /^app:$/m);
  assert.match(doc, /^ {2}# Routes, tried in order: the first whose conditions all hold chooses the egress\.$/m);
  assert.match(doc, /^ {2}routes: \[\]$/m);
  for (const field of ["name", "endpoints", "clients", "users", "destinations", "bind_to", "upstream_proxy", "upstream_credentials", "internal_service"]) {
    assert.match(doc, new RegExp(`^ {4}# {3}${field}:( |$)`, "m"), `routes[].${field}`);
  }
  assert.match(doc, /# Go to this internal service \(`host:port`\) behind a PROXY v2 header whose TLVs/);
  assert.match(doc, /^ {2}# The L4 firewall, checked before any route\.$/m);
  assert.match(doc, /^ {2}firewall:$/m);
  assert.match(doc, /^ {4}allow: \[\]$/m);
  assert.match(doc, /^ {4}deny: \[\]$/m);
  assert.match(doc, /# Host names: `example\.com` \(exactly\), `\.example\.com` \(it and its subdomains\) or\n[\s#]*`\*\.example\.com` \(its subdomains only\)\./);
  assert.match(doc, /# Networks \(`10\.0\.0\.0\/8`\); a name's resolved addresses are checked against them\./);
});
