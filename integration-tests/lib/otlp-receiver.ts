// A small OTLP/HTTP trace receiver for tests: listens on 127.0.0.1 (port 0), takes
// `POST /v1/traces` with protobuf bodies (plain or gzip), answers 200 with an empty
// ExportTraceServiceResponse, and keeps every span as a plain object, so tests can wait for
// the spans Oxy exports and print them as a tree in assertion messages.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import {
  decodeTraceRequest,
  encodeEmptyTraceResponse,
  type AnyValue,
  type Int64,
  type KeyValue,
} from "./otlp-proto.ts";

const gunzipAsync = promisify(gunzip);

/** Bodies larger than this are refused (413): no test exports that much. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** OTLP Span.SpanKind values. */
export const SpanKind = { UNSPECIFIED: 0, INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;

/** OTLP Status.StatusCode values. */
export const StatusCode = { UNSET: 0, OK: 1, ERROR: 2 } as const;

export type AttributeValue = string | number | boolean;

/** One received span, flattened from resource / scope / span. */
export interface Span {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  /** A SpanKind value. */
  kind: number;
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  /** Integers become numbers, arrays and key-value lists JSON text, bytes hex. */
  attributes: Record<string, AttributeValue>;
  /** The resource attribute service.name ("" when absent). */
  serviceName: string;
  /** The instrumentation scope's name ("" when absent). */
  scopeName: string;
  status: { code: number; message: string };
  events: { name: string; timeUnixNano: bigint; attributes: Record<string, AttributeValue> }[];
  /** Spans this one links to (hex ids). */
  links: { traceId: string; spanId: string }[];
}

/** What one export request carried, in arrival order. */
export interface ExportRequest {
  contentType: string;
  contentEncoding: string;
  userAgent: string;
  spanCount: number;
}

export interface OtlpReceiver {
  /** http://127.0.0.1:PORT: the value for `telemetry.tracing.otlp_endpoint`. */
  url: string;
  /** Every span received so far, in arrival order. */
  spans(): Span[];
  /** Every accepted export request so far. */
  requests(): ExportRequest[];
  /** Requests refused (bad path, method, content type, encoding or protobuf), described. */
  errors(): string[];
  /** Resolves with all spans once `predicate(allSpans)` holds (checked now and after each
   * export); rejects after `timeoutMs`, naming the spans seen. */
  waitForSpans(predicate: (spans: Span[]) => boolean, timeoutMs?: number): Promise<Span[]>;
  close(): Promise<void>;
}

function hex(bytes: Uint8Array | null | undefined): string {
  return bytes ? Buffer.from(bytes).toString("hex") : "";
}

function toBigInt(value: Int64 | null | undefined): bigint {
  return value == null ? 0n : BigInt(value.toString());
}

/** Plain JSON-able form of an AnyValue, for nested values rendered as text. */
function plainValue(value: AnyValue | null | undefined): unknown {
  if (!value) return null;
  if (value.stringValue != null) return value.stringValue;
  if (value.boolValue != null) return value.boolValue;
  if (value.intValue != null) return Number(value.intValue.toString());
  if (value.doubleValue != null) return value.doubleValue;
  if (value.bytesValue != null) return hex(value.bytesValue);
  if (value.arrayValue != null) return (value.arrayValue.values ?? []).map(plainValue);
  if (value.kvlistValue != null) {
    return Object.fromEntries((value.kvlistValue.values ?? []).map((kv) => [kv.key, plainValue(kv.value)]));
  }
  return null;
}

function attributeValue(value: AnyValue | null | undefined): AttributeValue {
  const plain = plainValue(value);
  if (typeof plain === "string" || typeof plain === "number" || typeof plain === "boolean") return plain;
  return JSON.stringify(plain);
}

function attributes(list: KeyValue[] | null | undefined): Record<string, AttributeValue> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, attributeValue(kv.value)]));
}

/** Flattens a decoded export request into spans. */
function spansOf(body: Uint8Array): Span[] {
  const request = decodeTraceRequest(body);
  const spans: Span[] = [];
  for (const resourceSpans of request.resourceSpans ?? []) {
    const serviceName = String(attributes(resourceSpans.resource?.attributes)["service.name"] ?? "");
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      for (const span of scopeSpans.spans ?? []) {
        spans.push({
          traceId: hex(span.traceId),
          spanId: hex(span.spanId),
          parentSpanId: hex(span.parentSpanId),
          name: span.name ?? "",
          kind: span.kind ?? 0,
          startTimeUnixNano: toBigInt(span.startTimeUnixNano),
          endTimeUnixNano: toBigInt(span.endTimeUnixNano),
          attributes: attributes(span.attributes),
          serviceName,
          scopeName: scopeSpans.scope?.name ?? "",
          status: { code: span.status?.code ?? 0, message: span.status?.message ?? "" },
          events: (span.events ?? []).map((event) => ({
            name: event.name ?? "",
            timeUnixNano: toBigInt(event.timeUnixNano),
            attributes: attributes(event.attributes),
          })),
          links: (span.links ?? []).map((link) => ({ traceId: hex(link.traceId), spanId: hex(link.spanId) })),
        });
      }
    }
  }
  return spans;
}

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new Error(`body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Renders spans as indented parent/child text, one block per trace, children in start
 * order; a span whose parent was not received is shown as a root with a note. */
export function spanTree(spans: Span[]): string {
  if (spans.length === 0) return "(no spans)";
  const byStart = [...spans].sort((a, b) => (a.startTimeUnixNano < b.startTimeUnixNano ? -1 : a.startTimeUnixNano > b.startTimeUnixNano ? 1 : 0));
  const ids = new Set(spans.map((s) => `${s.traceId}/${s.spanId}`));
  const children = new Map<string, Span[]>();
  for (const span of byStart) {
    const key = `${span.traceId}/${span.parentSpanId}`;
    children.set(key, [...(children.get(key) ?? []), span]);
  }
  const kindNames = Object.fromEntries(Object.entries(SpanKind).map(([name, value]) => [value, name.toLowerCase()]));
  const lines: string[] = [];
  const render = (span: Span, depth: number, note: string) => {
    const status = span.status.code === StatusCode.ERROR ? ` ERROR${span.status.message ? ` ${span.status.message}` : ""}` : "";
    lines.push(`${"  ".repeat(depth + 1)}${span.name} [${kindNames[span.kind] ?? span.kind}] ${span.serviceName} span=${span.spanId}${status}${note}`);
    for (const child of children.get(`${span.traceId}/${span.spanId}`) ?? []) render(child, depth + 1, "");
  };
  const traces = [...new Set(byStart.map((s) => s.traceId))];
  for (const traceId of traces) {
    lines.push(`trace ${traceId}`);
    for (const span of byStart) {
      if (span.traceId !== traceId) continue;
      if (span.parentSpanId === "") render(span, 0, "");
      else if (!ids.has(`${span.traceId}/${span.parentSpanId}`)) render(span, 0, ` (parent ${span.parentSpanId} not received)`);
    }
  }
  return lines.join("\n");
}

/** Starts the receiver on 127.0.0.1 with a port the kernel picks. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const received: Span[] = [];
  const requests: ExportRequest[] = [];
  const errors: string[] = [];
  /** Re-checked after every accepted export. */
  const waiters = new Set<() => void>();
  const emptyResponse = encodeEmptyTraceResponse();

  const refuse = (response: ServerResponse, status: number, why: string) => {
    errors.push(`${status}: ${why}`);
    response.writeHead(status, { "content-type": "text/plain" }).end(`${why}\n`);
  };

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? "").split("?")[0];
    if (path !== "/v1/traces") return refuse(response, 404, `${request.method} ${request.url}: not /v1/traces`);
    if (request.method !== "POST") return refuse(response, 405, `${request.method} /v1/traces: only POST`);
    const contentType = (request.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
    if (contentType !== "application/x-protobuf") return refuse(response, 415, `content-type ${contentType || "(none)"}: only application/x-protobuf`);
    const contentEncoding = (request.headers["content-encoding"] ?? "").trim().toLowerCase();
    if (contentEncoding !== "" && contentEncoding !== "identity" && contentEncoding !== "gzip") {
      return refuse(response, 415, `content-encoding ${contentEncoding}: only gzip or none`);
    }
    let spans: Span[];
    try {
      const raw = await readBody(request);
      spans = spansOf(contentEncoding === "gzip" ? await gunzipAsync(raw) : raw);
    } catch (error) {
      return refuse(response, 400, `undecodable export (${contentEncoding || "plain"}): ${(error as Error).message}`);
    }
    received.push(...spans);
    requests.push({ contentType, contentEncoding, userAgent: request.headers["user-agent"] ?? "", spanCount: spans.length });
    response.writeHead(200, { "content-type": "application/x-protobuf", "content-length": emptyResponse.length }).end(emptyResponse);
    for (const check of waiters) check();
  };

  const server = createServer((request, response) => {
    handle(request, response).catch((error) => {
      errors.push(`500: ${(error as Error).message}`);
      if (!response.headersSent) response.writeHead(500).end();
      else response.destroy();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => ok());
  });
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("OTLP receiver has no address");

  let closed = false;
  const waitForSpans = (predicate: (spans: Span[]) => boolean, timeoutMs = 10_000) =>
    new Promise<Span[]>((resolve, reject) => {
      if (predicate(received)) return resolve([...received]);
      if (closed) return reject(new Error("OTLP receiver is closed"));
      const check = () => {
        if (closed) return finish(() => reject(new Error("OTLP receiver closed while waiting for spans")));
        let holds: boolean;
        try {
          holds = predicate(received);
        } catch (error) {
          return finish(() => reject(error));
        }
        if (holds) finish(() => resolve([...received]));
      };
      const timer = setTimeout(() => {
        const names = received.map((s) => s.name);
        const refused = errors.length ? `\nrefused requests:\n  ${errors.join("\n  ")}` : "";
        finish(() =>
          reject(
            new Error(
              `timed out after ${timeoutMs} ms waiting for spans; ${received.length} span(s) in ${requests.length} export(s)` +
                `, names seen: ${names.length ? JSON.stringify(names) : "none"}\n${spanTree(received)}${refused}`,
            ),
          ),
        );
      }, timeoutMs);
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        waiters.delete(check);
        settle();
      };
      waiters.add(check);
    });

  return {
    url: `http://127.0.0.1:${address.port}`,
    spans: () => [...received],
    requests: () => [...requests],
    errors: () => [...errors],
    waitForSpans,
    close: () =>
      new Promise<void>((ok) => {
        closed = true;
        for (const check of waiters) check();
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}
