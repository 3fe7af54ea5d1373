// HTTP/2 on a raw TCP socket (h2c prior knowledge), for attack tests that no well-behaved
// client library would send: frames built by hand (RFC 9113 §4, §6), a minimal HPACK
// encoder (RFC 7541: integers, plain strings, literal and indexed representations; no
// Huffman), and a connection that records what the server answered (GOAWAY, RST_STREAM,
// response :status) and when it closed.

import { connect, type Socket } from "node:net";

/** Frame types (RFC 9113 §6). */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Frame flags. */
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

/** Error codes (RFC 9113 §7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** The name of an error code (`ENHANCE_YOUR_CALM`), or its hex value. */
export function errorName(code: number): string {
  const name = Object.entries(ErrorCode).find(([, v]) => v === code)?.[0];
  return name ?? `0x${code.toString(16)}`;
}

/** SETTINGS identifiers (RFC 9113 §6.5.2, RFC 8441). */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
  ENABLE_CONNECT_PROTOCOL: 0x8,
} as const;

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One frame: the 9-byte header and `payload`. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId & 0x7fffffff, 5);
  payload.copy(out, 9);
  return out;
}

export function settingsFrame(settings: [number, number][] = []): Buffer {
  const payload = Buffer.alloc(6 * settings.length);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, payload);
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FrameType.RST_STREAM, 0, streamId, payload);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(increment);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, payload);
}

// ---------------------------------------------------------------------------------------
// HPACK (RFC 7541), encoder side: no Huffman coding, no dynamic table unless asked for.

/** An integer with an N-bit prefix (§5.1); `flags` are the high bits of the first byte. */
export function hpackInteger(value: number, prefixBits: number, flags = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([flags | value]);
  const bytes = [flags | max];
  value -= max;
  while (value >= 128) {
    bytes.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

/** A string literal (§5.2), not Huffman-coded. */
export function hpackString(value: string | Buffer): Buffer {
  const bytes = Buffer.from(value);
  return Buffer.concat([hpackInteger(bytes.length, 7, 0x00), bytes]);
}

/** Literal header field without indexing, new name (§6.2.2): leaves no state behind. */
export function literalWithoutIndexing(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** Literal header field with incremental indexing, new name (§6.2.1): the field is
 * inserted into the decoder's dynamic table, at index 62 (the newest entry). */
export function literalWithIndexing(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** Indexed header field (§6.1): index 1-61 is the static table, 62+ the dynamic one. */
export function indexed(index: number): Buffer {
  return hpackInteger(index, 7, 0x80);
}

/** A header block of literal fields without indexing, in order (pseudo-headers first). */
export function headerBlock(fields: [string, string][]): Buffer {
  return Buffer.concat(fields.map(([name, value]) => literalWithoutIndexing(name, value)));
}

/** HEADERS frame(s) for `block` on `streamId`, split into CONTINUATION frames of at most
 * `maxFrame` bytes. */
export function headersFrames(streamId: number, block: Buffer, options: { endStream?: boolean; maxFrame?: number } = {}): Buffer {
  const maxFrame = options.maxFrame ?? 16_384;
  const endStream = options.endStream ? Flag.END_STREAM : 0;
  const frames: Buffer[] = [];
  for (let at = 0, first = true; first || at < block.length; first = false) {
    const chunk = block.subarray(at, at + maxFrame);
    at += chunk.length;
    const last = at >= block.length;
    frames.push(
      frame(first ? FrameType.HEADERS : FrameType.CONTINUATION, (first ? endStream : 0) | (last ? Flag.END_HEADERS : 0), streamId, chunk),
    );
  }
  return Buffer.concat(frames);
}

// HPACK decoder side: only as much as needed to read a response's :status when the
// server's encoder cannot use its dynamic table (the client's SETTINGS_HEADER_TABLE_SIZE
// is 0): static-table indexes 8-14, or a literal with name index 8 whose value is plain or
// Huffman-coded digits (RFC 7541 Appendix B: 0-2 are 5-bit codes 0x0-0x2, 3-9 6-bit codes
// 0x19-0x1f).

const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };

function decodeInteger(buf: Buffer, at: number, prefixBits: number): [number, number] | undefined {
  if (at >= buf.length) return undefined;
  const max = (1 << prefixBits) - 1;
  let value = buf[at] & max;
  let next = at + 1;
  if (value < max) return [value, next];
  let shift = 0;
  for (;;) {
    if (next >= buf.length || shift > 28) return undefined;
    const byte = buf[next++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if ((byte & 0x80) === 0) return [value, next];
  }
}

function huffmanDigits(bytes: Buffer): string | undefined {
  let bits = "";
  for (const b of bytes) bits += b.toString(2).padStart(8, "0");
  let out = "";
  let at = 0;
  while (at < bits.length) {
    const rest = bits.slice(at);
    if (rest.length < 8 && /^1*$/.test(rest)) break; // EOS padding
    const five = parseInt(rest.slice(0, 5), 2);
    if (rest.length >= 5 && five <= 2) {
      out += String(five);
      at += 5;
      continue;
    }
    const six = parseInt(rest.slice(0, 6), 2);
    if (rest.length >= 6 && six >= 0x19 && six <= 0x1f) {
      out += String(six - 0x19 + 3);
      at += 6;
      continue;
    }
    return undefined;
  }
  return out;
}

/** The :status of a response header block, when it can be read without a dynamic table. */
export function decodeStatus(block: Buffer): number | undefined {
  let at = 0;
  // Dynamic table size updates (§6.3) may come first.
  while (at < block.length && (block[at] & 0xe0) === 0x20) {
    const size = decodeInteger(block, at, 5);
    if (!size) return undefined;
    at = size[1];
  }
  if (at >= block.length) return undefined;
  const first = block[at];
  if (first & 0x80) {
    const index = decodeInteger(block, at, 7);
    return index ? STATIC_STATUS[index[0]] : undefined;
  }
  // Literal with incremental indexing (01xxxxxx, 6-bit index), without indexing
  // (0000xxxx) or never indexed (0001xxxx), both with a 4-bit index.
  const prefix = (first & 0xc0) === 0x40 ? 6 : 4;
  const name = decodeInteger(block, at, prefix);
  if (!name || name[0] !== 8) return undefined;
  at = name[1];
  if (at >= block.length) return undefined;
  const huffman = (block[at] & 0x80) !== 0;
  const length = decodeInteger(block, at, 7);
  if (!length) return undefined;
  const raw = block.subarray(length[1], length[1] + length[0]);
  const text = huffman ? huffmanDigits(raw) : raw.toString("latin1");
  return text && /^\d{3}$/.test(text) ? Number(text) : undefined;
}

// ---------------------------------------------------------------------------------------
// A client connection

export interface GoAway {
  lastStreamId: number;
  code: number;
  debug: string;
}

/** A raw HTTP/2 client connection: sends the preface and SETTINGS, answers the server's
 * SETTINGS and PINGs, and records what comes back. */
export class RawH2 {
  /** The first GOAWAY from the server, if any. */
  goaway?: GoAway;
  /** RST_STREAM error codes from the server, by stream. */
  readonly resets = new Map<number, number>();
  /** Response :status by stream (when readable, see `decodeStatus`); 0 when unreadable. */
  readonly statuses = new Map<number, number>();
  /** Streams on which the server sent END_STREAM. */
  readonly ended = new Set<number>();
  /** The server's SETTINGS (the first frame it sent). */
  serverSettings?: Map<number, number>;
  /** Whether the TCP connection has closed (either side, or an error). */
  closed = false;
  /** Set when the socket errored (ECONNRESET after the server closed, typically). */
  error?: Error;
  /** Bytes this client has handed to the socket. */
  bytesWritten = 0;
  /** Frames received, by type. */
  readonly framesIn = new Map<number, number>();

  private buffer: Buffer = Buffer.alloc(0);
  private waiters = new Set<() => void>();
  /** Resolves when the connection has closed. */
  readonly whenClosed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on("data", (d) => this.onData(d));
    socket.on("error", (e) => {
      this.error = e;
    });
    this.whenClosed = new Promise((ok) =>
      socket.on("close", () => {
        this.closed = true;
        this.notify();
        ok();
      }),
    );
  }

  /** Connects to 127.0.0.1:port and sends the preface and SETTINGS (header table size 0,
   * so that the server's responses can be read without HPACK state; no push; a large
   * stream window so that responses are not held back). */
  static async connect(port: number, settings: [number, number][] = []): Promise<RawH2> {
    const socket = await new Promise<Socket>((ok, fail) => {
      const s = connect({ port, host: "127.0.0.1", noDelay: true }, () => ok(s));
      s.once("error", fail);
    });
    const h2 = new RawH2(socket);
    h2.send(
      Buffer.concat([
        PREFACE,
        settingsFrame([[Setting.HEADER_TABLE_SIZE, 0], [Setting.ENABLE_PUSH, 0], [Setting.INITIAL_WINDOW_SIZE, 1 << 20], ...settings]),
        windowUpdateFrame(0, (1 << 24) - 65_535),
      ]),
    );
    return h2;
  }

  /** Writes `data`; resolves once the socket can take more (or the connection closed).
   * Whether it was written: false once the connection is closed. */
  send(data: Buffer): Promise<boolean> {
    if (this.closed || this.socket.destroyed) return Promise.resolve(false);
    this.bytesWritten += data.length;
    const flushed = this.socket.write(data);
    if (flushed) return Promise.resolve(true);
    return new Promise((ok) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        ok(!this.closed);
      };
      this.socket.once("drain", done);
      this.socket.once("close", done);
    });
  }

  /** Waits until `condition()` holds (checked on every frame and on close); false when
   * `timeoutMs` passed first. */
  async until(condition: () => boolean, timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((ok) => {
        const timer = setTimeout(done, Math.min(left, 50));
        function done() {
          clearTimeout(timer);
          ok();
        }
        this.waiters.add(done);
      });
    }
    return true;
  }

  /** Whether the server has ended the connection: GOAWAY or closed. */
  get refused(): boolean {
    return this.goaway !== undefined || this.closed;
  }

  /** Closes the connection (a FIN; `reset` to destroy it at once). */
  close(reset = false): Promise<void> {
    if (reset) this.socket.resetAndDestroy();
    else this.socket.end();
    return this.whenClosed;
  }

  private notify() {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
  }

  private onData(data: Buffer) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
    while (this.buffer.length >= 9) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.length < 9 + length) break;
      const type = this.buffer[3];
      const flags = this.buffer[4];
      const stream = this.buffer.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buffer.subarray(9, 9 + length);
      this.buffer = this.buffer.subarray(9 + length);
      this.onFrame(type, flags, stream, payload);
    }
    this.notify();
  }

  private onFrame(type: number, flags: number, stream: number, payload: Buffer) {
    this.framesIn.set(type, (this.framesIn.get(type) ?? 0) + 1);
    switch (type) {
      case FrameType.SETTINGS:
        if (!(flags & Flag.ACK)) {
          const settings = new Map<number, number>();
          for (let at = 0; at + 6 <= payload.length; at += 6) settings.set(payload.readUInt16BE(at), payload.readUInt32BE(at + 2));
          this.serverSettings ??= settings;
          this.writeQuietly(frame(FrameType.SETTINGS, Flag.ACK, 0));
        }
        break;
      case FrameType.PING:
        if (!(flags & Flag.ACK)) this.writeQuietly(frame(FrameType.PING, Flag.ACK, 0, payload));
        break;
      case FrameType.GOAWAY:
        this.goaway ??= {
          lastStreamId: payload.readUInt32BE(0) & 0x7fffffff,
          code: payload.readUInt32BE(4),
          debug: payload.subarray(8).toString(),
        };
        break;
      case FrameType.RST_STREAM:
        this.resets.set(stream, payload.readUInt32BE(0));
        break;
      case FrameType.HEADERS: {
        let block = payload;
        if (flags & Flag.PADDED) block = block.subarray(1, block.length - block[0]);
        if (flags & Flag.PRIORITY) block = block.subarray(5);
        if (!this.statuses.has(stream)) this.statuses.set(stream, decodeStatus(block) ?? 0);
        if (flags & Flag.END_STREAM) this.ended.add(stream);
        break;
      }
      case FrameType.DATA:
        if (flags & Flag.END_STREAM) this.ended.add(stream);
        // Give the flow-control credit back so that the server is never held up.
        if (payload.length > 0) {
          const updates = [windowUpdateFrame(0, payload.length)];
          if (!(flags & Flag.END_STREAM)) updates.push(windowUpdateFrame(stream, payload.length));
          this.writeQuietly(Buffer.concat(updates));
        }
        break;
    }
  }

  private writeQuietly(data: Buffer) {
    if (!this.closed && !this.socket.destroyed && this.socket.writable) {
      this.bytesWritten += data.length;
      this.socket.write(data);
    }
  }
}
