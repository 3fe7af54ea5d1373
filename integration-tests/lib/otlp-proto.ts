// The OTLP trace messages (opentelemetry.proto.collector.trace.v1) as protobuf codecs, for
// the test OTLP receiver and its self-test. The codecs are the protobufjs static code that
// @opentelemetry/otlp-transformer generated from the upstream opentelemetry-proto files;
// 0.216.0 is pinned because it is the last release that ships decoders for the trace
// messages (later releases replaced them with an encode-only serializer). Its typings call
// the generated root just `protobuf.Root`, so the shapes used here are declared below; the
// field numbers all come from the generated code.

import generatedRoot from "@opentelemetry/otlp-transformer/build/src/generated/root.js";

/** A 64-bit integer as protobufjs decodes it (a `long` Long), or what it accepts to encode. */
export type Int64 = { toString(): string } | number | string | bigint;

export interface AnyValue {
  stringValue?: string | null;
  boolValue?: boolean | null;
  intValue?: Int64 | null;
  doubleValue?: number | null;
  arrayValue?: { values?: AnyValue[] | null } | null;
  kvlistValue?: { values?: KeyValue[] | null } | null;
  bytesValue?: Uint8Array | null;
  /** The name of the member of the `value` oneof that is set (decoded messages only). */
  readonly value?: string;
}

export interface KeyValue {
  key: string;
  value?: AnyValue | null;
}

export interface OtlpStatus {
  message?: string | null;
  code?: number | null;
}

export interface OtlpEvent {
  timeUnixNano?: Int64 | null;
  name?: string | null;
  attributes?: KeyValue[] | null;
}

export interface OtlpSpan {
  traceId: Uint8Array;
  spanId: Uint8Array;
  traceState?: string | null;
  parentSpanId?: Uint8Array | null;
  flags?: number | null;
  name: string;
  kind?: number | null;
  startTimeUnixNano?: Int64 | null;
  endTimeUnixNano?: Int64 | null;
  attributes?: KeyValue[] | null;
  events?: OtlpEvent[] | null;
  links?: OtlpLink[] | null;
  status?: OtlpStatus | null;
}

/** opentelemetry.proto.trace.v1.Span.Link (the fields the tests read). */
export interface OtlpLink {
  traceId: Uint8Array;
  spanId: Uint8Array;
}

export interface ScopeSpans {
  scope?: { name?: string | null; version?: string | null } | null;
  spans?: OtlpSpan[] | null;
}

export interface ResourceSpans {
  resource?: { attributes?: KeyValue[] | null } | null;
  scopeSpans?: ScopeSpans[] | null;
}

export interface ExportTraceServiceRequest {
  resourceSpans?: ResourceSpans[] | null;
}

interface MessageCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(data: Uint8Array): T;
}

interface TraceServiceMessages {
  ExportTraceServiceRequest: MessageCodec<ExportTraceServiceRequest>;
  ExportTraceServiceResponse: MessageCodec<object>;
}

const traceService = (generatedRoot as unknown as {
  opentelemetry: { proto: { collector: { trace: { v1: TraceServiceMessages } } } };
}).opentelemetry.proto.collector.trace.v1;

/** Decodes an ExportTraceServiceRequest (throws on malformed protobuf). */
export function decodeTraceRequest(body: Uint8Array): ExportTraceServiceRequest {
  return traceService.ExportTraceServiceRequest.decode(body);
}

/** Encodes an ExportTraceServiceRequest (what an exporter sends). */
export function encodeTraceRequest(request: ExportTraceServiceRequest): Buffer {
  return Buffer.from(traceService.ExportTraceServiceRequest.encode(request).finish());
}

/** An empty ExportTraceServiceResponse: full success. */
export function encodeEmptyTraceResponse(): Buffer {
  return Buffer.from(traceService.ExportTraceServiceResponse.encode({}).finish());
}

/** Decodes an ExportTraceServiceResponse (for the self-test). */
export function decodeTraceResponse(body: Uint8Array): object {
  return traceService.ExportTraceServiceResponse.decode(body);
}
