// Distributed tracing: two Oxys in a chain (a front that forwards through an upstream
// Oxy acting as its upstream proxy) export spans over OTLP/HTTP to a test receiver. The
// caller's `traceparent` is the parent of the front's request span, the front's trace
// context reaches the origin and the upstream Oxy (in its CONNECT), and the spans of both
// processes form one tree: request -> connect -> (upstream) request -> tunnel -> connect
// -> dns. Sampling follows the caller's decision; without one, `sample_ratio` decides.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { startOtlpReceiver, spanTree, type OtlpReceiver, type Span } from "../lib/otlp-receiver.ts";
import { OxyProcess } from "../lib/oxy.ts";
import { proxyRequest } from "../lib/proxy-connect.ts";

let origin: Origin;
let dns: DnsServer;
let receiver: OtlpReceiver;

before(async () => {
  origin = await startOrigin();
  dns = await startDnsServer({ "origin.oxy.test": ["127.0.0.1"] });
  receiver = await startOtlpReceiver();
});

after(async () => {
  await origin.close();
  await dns.close();
  await receiver.close();
});

const hex = (bytes: number) => randomBytes(bytes).toString("hex");

/** `traceparent` for trace `traceId` from span `spanId`, sampled or not. */
const traceparent = (traceId: string, spanId: string, sampled = true) => `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;

/** A GET through the forward proxy on `port`, with extra header lines. */
async function get(port: number, path: string, headers: string): Promise<number> {
  const target = `origin.oxy.test:${origin.port}`;
  const reply = await proxyRequest(port, `GET http://${target}${path} HTTP/1.1\r\nHost: ${target}\r\n${headers}Connection: close\r\n\r\n`);
  reply.socket.destroy();
  return reply.status;
}

function tracing(service: string, sampleRatio = 1) {
  return { otlp_endpoint: receiver.url, service_name: service, sample_ratio: sampleRatio };
}

test("one trace across the caller, two Oxys and the origin: spans linked parent to child, context propagated", async () => {
  const upstream = await OxyProcess.start({
    binary: "oxy",
    settings: {
      telemetry: { tracing: tracing("oxy-upstream") },
      dns: { groups: [{ servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "upstream", listen: ["127.0.0.1:0"], http: { connect: true } }],
    },
  });
  const front = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      telemetry: { tracing: tracing("oxy-front") },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "front", listen: ["127.0.0.1:0"], http: { forward_proxy: true }, app: { upstream_proxy: upstream.address("upstream") } }],
    },
  });
  const [traceId, callerSpan] = [hex(16), hex(8)];
  assert.equal(await get(front.port("front"), "/traced", `traceparent: ${traceparent(traceId, callerSpan)}\r\n`), 200);

  // Every span of the trace: the front's request, its connect to the upstream proxy, the
  // upstream's CONNECT request, its tunnel, its connect to the origin and the DNS query.
  const inTrace = (spans: Span[]) => spans.filter((s) => s.traceId === traceId);
  const named = (spans: Span[], service: string, name: string) => inTrace(spans).find((s) => s.serviceName === service && s.name.startsWith(name));
  const spans = inTrace(
    await receiver.waitForSpans(
      (all) => ["dns", "tunnel", "CONNECT"].every((name) => named(all, "oxy-upstream", name)) && named(all, "oxy-front", "GET /traced") !== undefined,
      15_000,
    ),
  );
  const tree = spanTree(spans);
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const parentOf = (span: Span) => byId.get(span.parentSpanId);

  const request = named(spans, "oxy-front", "GET /traced")!;
  assert.equal(request.parentSpanId, callerSpan, `the caller's span is the request's parent:\n${tree}`);
  assert.equal(request.kind, 2, "a server span");
  assert.equal(Number(request.attributes["http.response.status_code"]), 200);

  // The origin got the front's request span as its parent, in the same trace.
  const seen = origin.seen.find((r) => r.url === "/traced");
  assert.ok(seen, "the origin saw the request");
  assert.equal(seen.headers.traceparent, traceparent(traceId, request.spanId), "the origin's traceparent names the front's request span");

  // The upstream's CONNECT, sent by the front on behalf of its request, is in the front's
  // part of the tree: its parent is the front's request span or one of its descendants.
  const upstreamRequest = named(spans, "oxy-upstream", `CONNECT origin.oxy.test:${origin.port}`)!;
  let ancestor = parentOf(upstreamRequest);
  assert.equal(ancestor?.serviceName, "oxy-front", `the upstream's CONNECT has a parent in the front:\n${tree}`);
  while (ancestor && ancestor !== request) ancestor = parentOf(ancestor);
  assert.equal(ancestor, request, `the upstream's CONNECT descends from the front's request span:\n${tree}`);
  const frontConnect = inTrace(spans).find((s) => s.serviceName === "oxy-front" && s.name.startsWith("connect") && s.parentSpanId === request.spanId);
  assert.ok(frontConnect, `the front's connect to its upstream proxy is its request's child:\n${tree}`);

  const tunnel = named(spans, "oxy-upstream", "tunnel")!;
  assert.equal(parentOf(tunnel), upstreamRequest, `the tunnel is the CONNECT request's child:\n${tree}`);
  const upstreamConnect = inTrace(spans).find((s) => s.serviceName === "oxy-upstream" && s.name.startsWith("connect") && s.parentSpanId === tunnel.spanId);
  assert.ok(upstreamConnect, `the upstream's connect to the origin is the tunnel's child:\n${tree}`);
  assert.equal(upstreamConnect.kind, 3, "a client span");
  const query = named(spans, "oxy-upstream", "dns")!;
  assert.equal(query.parentSpanId, upstreamConnect.spanId, `the DNS query is the connect's child:\n${tree}`);
  assert.equal(query.attributes["dns.question.name"], "origin.oxy.test");

  // A request whose parent is the caller links to its connection's span, which exports
  // as a trace of its own when the connection closes.
  assert.equal(request.links.length, 1, `one link, to the connection: ${JSON.stringify(request.links)}`);
  const link = request.links[0];
  assert.notEqual(link.traceId, traceId);
  const connection = await receiver.waitForSpans((all) => all.some((s) => s.spanId === link.spanId), 10_000);
  assert.equal(connection.find((s) => s.spanId === link.spanId)!.name, "connection");

  assert.deepEqual(await front.stop(), { code: 0, signal: null });
  assert.deepEqual(await upstream.stop(), { code: 0, signal: null });
});

test("sampling: a caller's decision is followed; without one, sample_ratio 0 records nothing", async () => {
  const oxy = await OxyProcess.start({
    binary: "oxy",
    settings: {
      telemetry: { tracing: tracing("oxy-sampled", 0) },
      dns: { groups: [{ servers: [{ address: `127.0.0.1:${dns.port}` }] }] },
      egress: { allow: ["127.0.0.0/8"] },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], http: { forward_proxy: true } }],
    },
  });
  const port = oxy.port("web");
  const [unsampled, sampled] = [hex(16), hex(16)];
  assert.equal(await get(port, "/no-parent", ""), 200);
  assert.equal(await get(port, "/not-sampled", `traceparent: ${traceparent(unsampled, hex(8), false)}\r\n`), 200);
  assert.equal(await get(port, "/sampled", `traceparent: ${traceparent(sampled, hex(8))}\r\n`), 200);
  // The three requests' spans end in order: once the last one's are in, the others'
  // would have been sent too.
  const all = await receiver.waitForSpans((spans) => spans.some((s) => s.traceId === sampled && s.name === "GET /sampled"), 10_000);
  const mine = all.filter((s) => s.serviceName === "oxy-sampled");
  assert.ok(mine.every((s) => s.traceId === sampled), `only the sampled trace is exported:\n${spanTree(mine)}`);
  // Unsampled, the context still travels on: the origin sees the caller's trace.
  const forwarded = origin.seen.find((r) => r.url === "/not-sampled");
  assert.match(String(forwarded?.headers.traceparent), new RegExp(`^00-${unsampled}-[0-9a-f]{16}-00$`));
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});
