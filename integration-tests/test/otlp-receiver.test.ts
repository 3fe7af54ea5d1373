// Self-test of the OTLP/HTTP trace receiver (lib/otlp-receiver.ts) before Oxy's tracing tests
// rely on it: an ExportTraceServiceRequest encoded with the same generated codecs, posted
// plain and gzip-compressed, must come back as the expected spans; refusals and waits too.

import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import { decodeTraceResponse, encodeTraceRequest, type ExportTraceServiceRequest } from "../lib/otlp-proto.ts";
import { SpanKind, StatusCode, spanTree, startOtlpReceiver, type OtlpReceiver, type Span } from "../lib/otlp-receiver.ts";

const traceId = "0af7651916cd43dd8448eb211c80319c";
const parentId = "b7ad6b7169203331";
const childId = "00f067aa0ba902b7";
// Past 2^53: the receiver must keep nanosecond timestamps exact.
const parentStart = 1_700_000_000_123_456_789n;

/** A parent SERVER span and its CLIENT child from service "oxy-selftest". */
function sampleRequest(): ExportTraceServiceRequest {
  return {
    resourceSpans: [
      {
        resource: {
          attributes: [
            { key: "service.name", value: { stringValue: "oxy-selftest" } },
            { key: "host.name", value: { stringValue: "test-host" } },
          ],
        },
        scopeSpans: [
          {
            scope: { name: "oxy", version: "0.0.0" },
            spans: [
              {
                traceId: Buffer.from(traceId, "hex"),
                spanId: Buffer.from(parentId, "hex"),
                name: "GET /",
                kind: SpanKind.SERVER,
                startTimeUnixNano: parentStart.toString(),
                endTimeUnixNano: (parentStart + 5_000_000n).toString(),
                attributes: [
                  { key: "http.request.method", value: { stringValue: "GET" } },
                  { key: "http.response.status_code", value: { intValue: 200 } },
                  { key: "tls", value: { boolValue: false } },
                  { key: "ratio", value: { doubleValue: 0.5 } },
                  { key: "tags", value: { arrayValue: { values: [{ stringValue: "a" }, { intValue: 2 }] } } },
                ],
                status: { code: StatusCode.OK },
              },
              {
                traceId: Buffer.from(traceId, "hex"),
                spanId: Buffer.from(childId, "hex"),
                parentSpanId: Buffer.from(parentId, "hex"),
                name: "upstream connect",
                kind: SpanKind.CLIENT,
                startTimeUnixNano: (parentStart + 1_000n).toString(),
                endTimeUnixNano: (parentStart + 2_000_000n).toString(),
                attributes: [{ key: "server.address", value: { stringValue: "127.0.0.1" } }],
                events: [{ name: "retry", timeUnixNano: (parentStart + 1_500n).toString(), attributes: [] }],
                links: [{ traceId: Buffer.from(traceId, "hex"), spanId: Buffer.from(parentId, "hex") }],
                status: { code: StatusCode.ERROR, message: "connection refused" },
              },
            ],
          },
        ],
      },
    ],
  };
}

const expectedSpans: Span[] = [
  {
    traceId,
    spanId: parentId,
    parentSpanId: "",
    name: "GET /",
    kind: SpanKind.SERVER,
    startTimeUnixNano: parentStart,
    endTimeUnixNano: parentStart + 5_000_000n,
    attributes: { "http.request.method": "GET", "http.response.status_code": 200, tls: false, ratio: 0.5, tags: '["a",2]' },
    serviceName: "oxy-selftest",
    scopeName: "oxy",
    status: { code: StatusCode.OK, message: "" },
    events: [],
    links: [],
  },
  {
    traceId,
    spanId: childId,
    parentSpanId: parentId,
    name: "upstream connect",
    kind: SpanKind.CLIENT,
    startTimeUnixNano: parentStart + 1_000n,
    endTimeUnixNano: parentStart + 2_000_000n,
    attributes: { "server.address": "127.0.0.1" },
    serviceName: "oxy-selftest",
    scopeName: "oxy",
    status: { code: StatusCode.ERROR, message: "connection refused" },
    events: [{ name: "retry", timeUnixNano: parentStart + 1_500n, attributes: {} }],
    links: [{ traceId, spanId: parentId }],
  },
];

let receiver: OtlpReceiver;

before(async () => {
  receiver = await startOtlpReceiver();
});

after(async () => {
  await receiver.close();
});

interface Answer {
  status: number;
  contentType: string;
  body: Buffer;
}

/** POSTs `body` to the receiver and reads the whole answer. */
function post(body: Buffer, headers: Record<string, string>, path = "/v1/traces"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${receiver.url}${path}`, { method: "POST", headers: { ...headers, "user-agent": "otlp-selftest" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: res.headers["content-type"] ?? "", body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

test("the receiver listens on loopback with a kernel-picked port", () => {
  assert.match(receiver.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.notEqual(receiver.url, "http://127.0.0.1:0");
});

test("a plain protobuf export is answered with an empty ExportTraceServiceResponse and decoded", async () => {
  const response = await post(encodeTraceRequest(sampleRequest()), { "content-type": "application/x-protobuf" });
  assert.equal(response.status, 200);
  assert.equal(response.contentType, "application/x-protobuf");
  assert.equal(response.body.length, 0, "an empty response message encodes to no bytes");
  assert.deepEqual({ ...decodeTraceResponse(response.body) }, {});

  const spans = await receiver.waitForSpans((all) => all.length >= 2, 5_000);
  assert.deepEqual(spans, expectedSpans);
  assert.deepEqual(receiver.requests(), [{ contentType: "application/x-protobuf", contentEncoding: "", userAgent: "otlp-selftest", spanCount: 2 }]);
});

test("a gzip-compressed export decodes to the same spans", async () => {
  const before = receiver.spans().length;
  const compressed = gzipSync(encodeTraceRequest(sampleRequest()));
  const response = await post(compressed, { "content-type": "application/x-protobuf", "content-encoding": "gzip" });
  assert.equal(response.status, 200);
  const spans = await receiver.waitForSpans((all) => all.length >= before + 2, 5_000);
  assert.deepEqual(spans.slice(before), expectedSpans);
  assert.equal(receiver.requests().at(-1)?.contentEncoding, "gzip");
});

test("waitForSpans resolves on an export that arrives after the wait began", async () => {
  const waiting = receiver.waitForSpans((all) => all.some((s) => s.name === "late span"), 5_000);
  const late = sampleRequest();
  late.resourceSpans![0].scopeSpans![0].spans![1].name = "late span";
  const response = await post(encodeTraceRequest(late), { "content-type": "application/x-protobuf" });
  assert.equal(response.status, 200);
  const spans = await waiting;
  assert.ok(spans.some((s) => s.name === "late span" && s.parentSpanId === parentId));
});

test("waitForSpans rejects on timeout naming the spans seen", async () => {
  await assert.rejects(
    receiver.waitForSpans((all) => all.some((s) => s.name === "never sent"), 100),
    (error: Error) => {
      assert.match(error.message, /timed out after 100 ms/);
      assert.match(error.message, /"GET \/"/);
      assert.match(error.message, /"upstream connect"/);
      return true;
    },
  );
});

test("wrong paths, content types, encodings and bodies are refused and recorded", async () => {
  const request = encodeTraceRequest(sampleRequest());
  const spansBefore = receiver.spans().length;
  const cases: [Promise<Answer>, number][] = [
    [post(request, { "content-type": "application/x-protobuf" }, "/v1/metrics"), 404],
    [post(request, { "content-type": "application/json" }), 415],
    [post(request, { "content-type": "application/x-protobuf", "content-encoding": "br" }), 415],
    [post(Buffer.from([0x0a, 0xff, 0xff, 0xff]), { "content-type": "application/x-protobuf" }), 400],
    [post(request, { "content-type": "application/x-protobuf", "content-encoding": "gzip" }), 400],
  ];
  for (const [response, status] of cases) {
    const answer = await response;
    assert.equal(answer.status, status, answer.body.toString());
  }
  assert.equal(receiver.spans().length, spansBefore, "refused exports add no spans");
  assert.equal(receiver.errors().length, cases.length, receiver.errors().join("\n"));
});

test("spanTree indents children under their parent", () => {
  const tree = spanTree(expectedSpans);
  assert.equal(
    tree,
    [
      `trace ${traceId}`,
      `  GET / [server] oxy-selftest span=${parentId}`,
      `    upstream connect [client] oxy-selftest span=${childId} ERROR connection refused`,
    ].join("\n"),
  );
  assert.match(spanTree([expectedSpans[1]]), /upstream connect .*\(parent b7ad6b7169203331 not received\)/);
  assert.equal(spanTree([]), "(no spans)");
});
