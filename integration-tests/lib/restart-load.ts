// A steady load through a running Oxy while it restarts: HTTP/1.1 keep-alive requests,
// HTTP/2 (h2c) streams, long-lived and short CONNECT tunnels to a TCP echo server, and
// HTTP/3 through `oxy-client get --duration`. Every request is checked (status 200, the
// origin's echo of its path); each failure is kept with its time and error. The only
// retries are those HTTP allows for requests the server never processed: an HTTP/2
// stream refused (REFUSED_STREAM, or not started) on a session that got a GOAWAY, and an
// HTTP/1.1 request whose reused keep-alive connection was closed before any answer
// (RFC 9112 §9.3.1); they are counted apart, once per request. A long-lived tunnel the
// proxy closes counts as `cut` only when that happens at or after the drain deadline of
// a restart the test reported (noteRestart); any other close is a failure.

import { Agent, request as httpRequest } from "node:http";
import { connect as h2connect, constants as h2constants, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import { sleep } from "./oxy.ts";
import { runClient } from "./oxy-client.ts";
import { proxyConnect } from "./proxy-connect.ts";

export type LoadKind = "http1" | "http2" | "tunnel" | "shortTunnel" | "http3";
export const loadKinds: LoadKind[] = ["http1", "http2", "tunnel", "shortTunnel", "http3"];

export interface LoadFailure {
  kind: LoadKind;
  /** Date.now() when it was seen. */
  time: number;
  error: string;
}

export interface KindStats {
  /** Requests answered right (tunnels: messages echoed; short tunnels: tunnels that
   * carried their message and closed cleanly). */
  ok: number;
  failed: number;
  failures: LoadFailure[];
  /** Failures whose cause was a refused TCP connection (ECONNREFUSED). */
  refused: number;
  /** Connections (HTTP/2 sessions, tunnels, HTTP/3 connections) opened. */
  connections: number;
  /** Long-lived tunnels the proxy closed at or after a drain deadline. */
  cut: number;
  /** HTTP/2 requests sent again because a GOAWAY'd session refused or never started
   * them; HTTP/3 retries the client reports. */
  retriedRefused: number;
  /** HTTP/1.1 requests sent again because their reused keep-alive connection closed
   * before any answer. */
  retriedIdleClose: number;
  /** Successes of operations that started after the last mark(). */
  okSinceMark: number;
}

export type LoadStats = Record<LoadKind, KindStats>;

export interface Http3Load {
  /** `https://localhost:PORT/path` of an HTTPS endpoint with HTTP/3 that reverse-proxies
   * to the origin. */
  url: string;
  /** The CA (PEM file) that verifies the endpoint's certificate. */
  ca: string;
  /** Each `oxy-client get --duration` run lasts this long; runs follow each other until
   * the load stops (stop() waits for the one under way). */
  runSeconds?: number;
  /** `--concurrency` of each run. */
  concurrency?: number;
}

export interface LoadOptions {
  /** Port of the HTTP endpoint (HTTP/1.1 and h2c on TCP, `forward_proxy` and `connect`
   * on, the origin's loopback address allowed by egress). */
  proxyPort: number;
  /** Port of the origin (lib/origin.ts: 200 and a JSON echo of the request). */
  originPort: number;
  /** Port of the TCP echo server (lib/echo-server.ts) the tunnels go to. */
  echoPort: number;
  /** The drain deadline: a long-lived tunnel may be cut this long after the signal of
   * the restart that drains its process (server.shutdown_timeout). */
  shutdownTimeoutMs: number;
  /** HTTP/1.1 keep-alive connections, one request loop each (default 4). */
  http1Connections?: number;
  /** HTTP/2 sessions (default 2), each with this many request loops (default 2). */
  http2Sessions?: number;
  http2StreamsPerSession?: number;
  /** Long-lived tunnels at once (default 2), each echoing a message every
   * `tunnelIntervalMs` (default 50) and, after `tunnelLifetimeMs` (default: until
   * stopped), closed by the client and opened again. */
  tunnels?: number;
  tunnelIntervalMs?: number;
  tunnelLifetimeMs?: number;
  /** Loops of short tunnels: open, echo one message, close (default 1). */
  shortTunnels?: number;
  /** HTTP/3 load; none when absent. */
  http3?: Http3Load;
  /** A request, a CONNECT or an echo not answered within this fails (default 5000). */
  timeoutMs?: number;
}

export interface LoadRun {
  /** When the load started (Date.now()). */
  readonly startedAt: number;
  /** The counts so far (tunnel cuts judged against the restarts noted so far). */
  stats(): LoadStats;
  /** Starts counting okSinceMark again from zero, for operations starting from now. */
  mark(): void;
  /** Waits until each of `kinds` (default: every kind under load) has `count` successes
   * since the last mark(); throws with the stats after `timeoutMs`. */
  waitForOkSinceMark(count: number | Partial<Record<LoadKind, number>>, timeoutMs?: number): Promise<void>;
  /** Reports a restart: its signal was sent at `signalledAt`, and the successor was seen
   * ready at `readyAt`. Tunnels open before `readyAt` may be cut from `signalledAt` +
   * shutdownTimeoutMs on. */
  noteRestart(signalledAt: number, readyAt: number): void;
  /** Stops every loop, waits for them (the HTTP/3 run under way too) and closes every
   * connection; the final counts. */
  stop(): Promise<LoadStats>;
}

/** One outcome of a request or tunnel operation; `retry`: HTTP allows sending it again
 * (the server never processed it). */
export type Outcome = { ok: true } | { ok: false; error: string; refused: boolean; retry: boolean };

function emptyStats(): KindStats {
  return { ok: 0, failed: 0, failures: [], refused: 0, connections: 0, cut: 0, retriedRefused: 0, retriedIdleClose: 0, okSinceMark: 0 };
}

function isRefused(e: unknown): boolean {
  const err = e as { code?: string; cause?: { code?: string } } | undefined;
  return err?.code === "ECONNREFUSED" || err?.cause?.code === "ECONNREFUSED";
}

function describe(e: unknown): string {
  const err = e as { code?: string; message?: string; cause?: { message?: string } };
  const cause = err?.cause?.message ? ` (${err.cause.message})` : "";
  return `${err?.code ? `${err.code}: ` : ""}${err?.message ?? String(e)}${cause}`;
}

/** Checks an answer: status 200 and the origin's JSON echo naming `path`. */
function checkAnswer(status: number, body: string, path: string): Outcome {
  if (status !== 200) return { ok: false, error: `status ${status}: ${body.slice(0, 200)}`, refused: false, retry: false };
  try {
    const url = JSON.parse(body).url;
    if (url === path) return { ok: true };
    return { ok: false, error: `the origin saw ${JSON.stringify(url)}, not ${path}`, refused: false, retry: false };
  } catch {
    return { ok: false, error: `not the origin's JSON: ${JSON.stringify(body.slice(0, 200))}`, refused: false, retry: false };
  }
}

/** GET `path` at the origin through the proxy as an absolute-form (forward proxy)
 * request on `agent`'s connections (`false`: a connection of its own). Retryable: the
 * reused connection closed before any answer. */
export function http1Get(agent: Agent | false, proxyPort: number, originPort: number, path: string, timeoutMs = 5_000, onSocket?: (s: Socket) => void): Promise<Outcome> {
  return new Promise((done) => {
    let answered = false;
    const req = httpRequest({
      host: "127.0.0.1",
      port: proxyPort,
      method: "GET",
      path: `http://127.0.0.1:${originPort}${path}`,
      headers: { host: `127.0.0.1:${originPort}` },
      agent,
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    const finish = (outcome: Outcome) => {
      clearTimeout(timer);
      done(outcome);
    };
    if (onSocket) req.on("socket", onSocket);
    req.on("response", (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => finish(checkAnswer(res.statusCode ?? 0, Buffer.concat(chunks).toString(), path)));
      res.on("error", (e) => finish({ ok: false, error: `response: ${describe(e)}`, refused: false, retry: false }));
      res.on("aborted", () => finish({ ok: false, error: "response aborted", refused: false, retry: false }));
    });
    req.on("error", (e: NodeJS.ErrnoException) => {
      const closedBeforeAnswer = !answered && req.reusedSocket && (e.code === "ECONNRESET" || e.code === "EPIPE");
      finish({ ok: false, error: describe(e), refused: isRefused(e), retry: closedBeforeAnswer });
    });
    req.end();
  });
}

/** An HTTP/2 session slot: the session requests go on, replaced by a new one once it
 * got a GOAWAY or closed. */
class Http2Slot {
  private session?: ClientHttp2Session;
  /** Sessions that received a GOAWAY. */
  readonly goneAway = new WeakSet<ClientHttp2Session>();
  /** The last error of each session, for failure messages. */
  readonly errors = new WeakMap<ClientHttp2Session, Error>();

  constructor(
    private readonly url: string,
    private readonly onConnection: () => void,
  ) {}

  current(): ClientHttp2Session {
    const s = this.session;
    if (s && !s.closed && !s.destroyed && !this.goneAway.has(s)) return s;
    const session = h2connect(this.url);
    this.onConnection();
    session.on("error", (e) => this.errors.set(session, e));
    session.on("goaway", () => {
      this.goneAway.add(session);
      if (this.session === session) this.session = undefined;
    });
    session.on("close", () => {
      if (this.session === session) this.session = undefined;
    });
    this.session = session;
    return session;
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }
}

/** GET `path` at the origin over the slot's HTTP/2 session (the origin's authority:
 * forward proxying). Retryable: refused by or never started on a GOAWAY'd session. */
function http2Get(slot: Http2Slot, originPort: number, path: string, timeoutMs: number): Promise<Outcome> {
  return new Promise((done) => {
    const session = slot.current();
    let stream: ClientHttp2Stream;
    try {
      stream = session.request({ ":method": "GET", ":scheme": "http", ":authority": `127.0.0.1:${originPort}`, ":path": path });
    } catch (e) {
      const notStarted = (e as { code?: string }).code === "ERR_HTTP2_GOAWAY_SESSION";
      return done({ ok: false, error: describe(e), refused: false, retry: notStarted });
    }
    let status = 0;
    const chunks: Buffer[] = [];
    let finished = false;
    const timer = setTimeout(() => {
      finish({ ok: false, error: `no answer in ${timeoutMs} ms`, refused: false, retry: false });
      stream.close(h2constants.NGHTTP2_CANCEL);
    }, timeoutMs);
    const finish = (outcome: Outcome) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      done(outcome);
    };
    const failure = (what: string, error?: Error): Outcome => {
      const refusedStream = stream.rstCode === h2constants.NGHTTP2_REFUSED_STREAM && slot.goneAway.has(session);
      const sessionError = slot.errors.get(session);
      const why = sessionError && sessionError !== error?.cause ? `${what}; session: ${describe(sessionError)}` : what;
      return { ok: false, error: `${why} (rst ${stream.rstCode})`, refused: isRefused(error) || isRefused(sessionError), retry: refusedStream };
    };
    stream.on("response", (headers) => (status = Number(headers[":status"])));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => finish(checkAnswer(status, Buffer.concat(chunks).toString(), path)));
    stream.on("error", (e) => finish(failure(describe(e), e)));
    stream.on("close", () => finish(failure("stream closed before its end")));
    stream.end();
  });
}

/** An open tunnel whose echoes are read as they come. */
export class EchoTunnel {
  private received = Buffer.alloc(0);
  private wake?: () => void;
  /** When the connection closed (Date.now()), if it did. */
  closedAt?: number;
  error?: Error;
  /** True once the client ended its side. */
  ending = false;

  constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.received = Buffer.concat([this.received, d]);
      this.wake?.();
    });
    socket.on("error", (e) => (this.error ??= e));
    socket.on("close", () => {
      this.closedAt = Date.now();
      this.wake?.();
    });
  }

  /** Sends `message` and waits for its echo: "ok", "closed" (the connection closed
   * first) or an error message. */
  async echo(message: string, timeoutMs: number): Promise<"ok" | "closed" | string> {
    if (this.closedAt !== undefined) return "closed";
    this.socket.write(message);
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < message.length) {
      if (this.closedAt !== undefined) return "closed";
      const left = deadline - Date.now();
      if (left <= 0) return `no echo in ${timeoutMs} ms`;
      await new Promise<void>((ok) => {
        const timer = setTimeout(ok, left);
        this.wake = () => {
          clearTimeout(timer);
          ok();
        };
      });
      this.wake = undefined;
    }
    const echoed = this.received.subarray(0, message.length).toString();
    this.received = this.received.subarray(message.length);
    return echoed === message ? "ok" : `echoed ${JSON.stringify(echoed)} for ${JSON.stringify(message)}`;
  }

  /** Ends the client's side and waits for a clean close; an error message otherwise. */
  async end(timeoutMs: number): Promise<string | undefined> {
    this.ending = true;
    this.socket.end();
    const deadline = Date.now() + timeoutMs;
    while (this.closedAt === undefined) {
      if (Date.now() > deadline) {
        this.socket.destroy();
        return `not closed ${timeoutMs} ms after the client's end`;
      }
      await sleep(10);
    }
    if (this.error) return `closing: ${describe(this.error)}`;
    if (this.received.length > 0) return `unexpected bytes ${JSON.stringify(this.received.toString())}`;
    return undefined;
  }
}

/** Opens a CONNECT tunnel to 127.0.0.1:`echoPort` on a fresh connection. */
export async function openTunnel(proxyPort: number, echoPort: number, timeoutMs: number): Promise<EchoTunnel | Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Error>((ok) => (timer = setTimeout(() => ok(new Error(`no CONNECT answer in ${timeoutMs} ms`)), timeoutMs)));
  const reply = await Promise.race([proxyConnect(proxyPort, `127.0.0.1:${echoPort}`).catch((e: Error) => e), timeout]);
  clearTimeout(timer);
  if (reply instanceof Error) return { ok: false, error: `CONNECT: ${describe(reply)}`, refused: isRefused(reply), retry: false };
  if (reply.status !== 200) return { ok: false, error: `CONNECT answered ${reply.status}: ${reply.body}`, refused: false, retry: false };
  return new EchoTunnel(reply.socket);
}

/** The JSON line `oxy-client get --duration` prints. */
interface Http3Summary {
  ok: number;
  failed: number;
  connections: number;
  errors: string[];
  retried?: number;
}

/** Starts the load; it runs until stop(). */
export function startLoad(options: LoadOptions): LoadRun {
  const timeoutMs = options.timeoutMs ?? 5_000;
  const stats = Object.fromEntries(loadKinds.map((k) => [k, emptyStats()])) as LoadStats;
  const active = new Set<LoadKind>();
  const restarts: { signalledAt: number; readyAt: number }[] = [];
  /** Long-lived tunnels the proxy closed, judged when the stats are read. */
  const closes: { openedAt: number; at: number; detail: string }[] = [];
  const startedAt = Date.now();
  let markedAt = startedAt;
  let stopping = false;
  let sequence = 0;

  const fail = (kind: LoadKind, error: string, refused = false) => {
    stats[kind].failed += 1;
    if (refused) stats[kind].refused += 1;
    stats[kind].failures.push({ kind, time: Date.now(), error });
  };
  const succeed = (kind: LoadKind, since: number, count = 1) => {
    stats[kind].ok += count;
    if (since >= markedAt) stats[kind].okSinceMark += count;
  };
  /** A failure is not followed by the next attempt in a busy loop. */
  const pause = () => sleep(50);
  /** Records one request's outcome, sending it once more (with `resend`) when HTTP
   * allows; pauses after a failure. */
  const request = async (kind: LoadKind, send: () => Promise<Outcome>, retriedAs: "retriedRefused" | "retriedIdleClose", resend = send) => {
    const started = Date.now();
    let outcome = await send();
    if (!outcome.ok && outcome.retry) {
      stats[kind][retriedAs] += 1;
      outcome = await resend();
      if (!outcome.ok) outcome = { ...outcome, error: `after a retry: ${outcome.error}` };
    }
    if (outcome.ok) return succeed(kind, started);
    fail(kind, outcome.error, outcome.refused);
    await pause();
  };

  const loops: Promise<void>[] = [];

  // HTTP/1.1: keep-alive connections, each with one request at a time.
  const http1Agent = new Agent({ keepAlive: true, maxSockets: options.http1Connections ?? 4 });
  const http1Sockets = new WeakSet<Socket>();
  const countSocket = (s: Socket) => {
    if (http1Sockets.has(s)) return;
    http1Sockets.add(s);
    stats.http1.connections += 1;
  };
  for (let worker = 0; worker < (options.http1Connections ?? 4); worker++) {
    active.add("http1");
    loops.push(
      (async () => {
        while (!stopping) {
          const path = `/load/http1/${worker}/${sequence++}`;
          const get = (agent: Agent | false) => () => http1Get(agent, options.proxyPort, options.originPort, path, timeoutMs, countSocket);
          // Sent again on a new connection (RFC 9112 §9.3.1): another pooled one may be
          // closing too.
          await request("http1", get(http1Agent), "retriedIdleClose", get(false));
        }
      })(),
    );
  }

  // HTTP/2: sessions with a few request loops each.
  const slots: Http2Slot[] = [];
  for (let s = 0; s < (options.http2Sessions ?? 2); s++) {
    const slot = new Http2Slot(`http://127.0.0.1:${options.proxyPort}`, () => (stats.http2.connections += 1));
    slots.push(slot);
    for (let worker = 0; worker < (options.http2StreamsPerSession ?? 2); worker++) {
      active.add("http2");
      loops.push(
        (async () => {
          while (!stopping) {
            const path = `/load/http2/${s}/${worker}/${sequence++}`;
            await request("http2", () => http2Get(slot, options.originPort, path, timeoutMs), "retriedRefused");
          }
        })(),
      );
    }
  }

  // Long-lived tunnels: a message every interval until their lifetime ends (or the
  // proxy cuts them), then a new one.
  const tunnelsOpen = new Set<EchoTunnel>();
  for (let t = 0; t < (options.tunnels ?? 2); t++) {
    active.add("tunnel");
    loops.push(
      (async () => {
        while (!stopping) {
          const opened = await openTunnel(options.proxyPort, options.echoPort, timeoutMs);
          if (!(opened instanceof EchoTunnel)) {
            if (!opened.ok) fail("tunnel", opened.error, opened.refused);
            await pause();
            continue;
          }
          stats.tunnel.connections += 1;
          tunnelsOpen.add(opened);
          const openedAt = Date.now();
          const endsAt = openedAt + (options.tunnelLifetimeMs ?? Infinity);
          let closedByProxy = false;
          let failed = false;
          for (let n = 0; !stopping && Date.now() < endsAt; n++) {
            const result = await opened.echo(`tunnel-${t}-${n};`, timeoutMs);
            if (result === "closed") {
              closedByProxy = true;
              break;
            }
            if (result !== "ok") {
              fail("tunnel", result);
              failed = true;
              break;
            }
            succeed("tunnel", openedAt);
            await sleep(options.tunnelIntervalMs ?? 50);
            if (opened.closedAt !== undefined) {
              closedByProxy = true;
              break;
            }
          }
          if (closedByProxy) {
            closes.push({ openedAt, at: opened.closedAt ?? Date.now(), detail: opened.error ? describe(opened.error) : "closed" });
          } else if (!failed && !stopping && opened.closedAt === undefined) {
            const problem = await opened.end(timeoutMs);
            if (problem) fail("tunnel", problem);
          }
          opened.socket.destroy();
          tunnelsOpen.delete(opened);
        }
      })(),
    );
  }

  // Short tunnels: open, one echo, close.
  for (let t = 0; t < (options.shortTunnels ?? 1); t++) {
    active.add("shortTunnel");
    loops.push(
      (async () => {
        for (let n = 0; !stopping; n++) {
          const started = Date.now();
          const opened = await openTunnel(options.proxyPort, options.echoPort, timeoutMs);
          if (!(opened instanceof EchoTunnel)) {
            if (!opened.ok) fail("shortTunnel", opened.error, opened.refused);
            await pause();
            continue;
          }
          stats.shortTunnel.connections += 1;
          const result = await opened.echo(`short-${t}-${n};`, timeoutMs);
          const problem = result === "ok" ? await opened.end(timeoutMs) : result === "closed" ? "closed by the proxy before the echo" : result;
          opened.socket.destroy();
          if (problem) fail("shortTunnel", problem);
          else succeed("shortTunnel", started);
        }
      })(),
    );
  }

  // HTTP/3: consecutive `oxy-client get --duration` runs.
  if (options.http3) {
    const h3 = options.http3;
    const seconds = h3.runSeconds ?? 1;
    active.add("http3");
    loops.push(
      (async () => {
        while (!stopping) {
          const started = Date.now();
          const args = ["get", h3.url, "--ca", h3.ca, "--duration", String(seconds), "--concurrency", String(h3.concurrency ?? 4)];
          const run = await runClient(args, { timeoutMs: seconds * 1000 + 20_000 });
          const line = run.stdout.trim().split("\n").pop() ?? "";
          let summary: Http3Summary | undefined;
          try {
            summary = line.startsWith("{") ? JSON.parse(line) : undefined;
          } catch {
            summary = undefined;
          }
          if (run.code !== 0 || !summary) {
            fail("http3", `oxy-client ${args.join(" ")} exited ${run.code ?? run.signal}: ${run.stdout}${run.stderr}`);
            await pause();
            continue;
          }
          succeed("http3", started, summary.ok);
          stats.http3.connections += summary.connections ?? 0;
          stats.http3.retriedRefused += summary.retried ?? 0;
          const errors = summary.errors ?? [];
          for (const error of errors) fail("http3", error);
          // Failures the summary counted without a message.
          for (let i = errors.length; i < summary.failed; i++) fail("http3", "failed (no message in the summary)");
        }
      })(),
    );
  }

  /** The stats with each proxy-closed tunnel judged: cut at or after the drain deadline
   * of the first restart not yet ready when it opened, or a failure. */
  const judged = (): LoadStats => {
    const out = structuredClone(stats);
    for (const close of closes) {
      const draining = restarts.filter((r) => r.readyAt >= close.openedAt).sort((a, b) => a.signalledAt - b.signalledAt)[0];
      const deadline = draining ? draining.signalledAt + options.shutdownTimeoutMs : undefined;
      if (deadline !== undefined && close.at >= deadline) {
        out.tunnel.cut += 1;
        continue;
      }
      const rel = (t: number) => `+${t - startedAt} ms`;
      const why = deadline === undefined ? "no restart drains it" : `its drain deadline is ${rel(deadline)}`;
      out.tunnel.failed += 1;
      out.tunnel.failures.push({ kind: "tunnel", time: close.at, error: `tunnel opened at ${rel(close.openedAt)} closed by the proxy at ${rel(close.at)} (${close.detail}); ${why}` });
    }
    return out;
  };

  return {
    startedAt,
    stats: judged,
    mark() {
      markedAt = Date.now();
      for (const kind of loadKinds) stats[kind].okSinceMark = 0;
    },
    async waitForOkSinceMark(count, waitMs = 15_000) {
      const wanted = (kind: LoadKind) => (typeof count === "number" ? (active.has(kind) ? count : 0) : (count[kind] ?? 0));
      const deadline = Date.now() + waitMs;
      while (loadKinds.some((kind) => stats[kind].okSinceMark < wanted(kind))) {
        if (Date.now() > deadline) {
          throw new Error(`the load did not reach ${JSON.stringify(count)} successes per kind in ${waitMs} ms:\n${formatStats(judged(), startedAt)}`);
        }
        await sleep(25);
      }
    },
    noteRestart(signalledAt, readyAt) {
      restarts.push({ signalledAt, readyAt });
    },
    async stop() {
      stopping = true;
      await Promise.all(loops);
      for (const tunnel of tunnelsOpen) tunnel.socket.destroy();
      for (const slot of slots) slot.close();
      http1Agent.destroy();
      return judged();
    },
  };
}

/** The counts of every kind and each failure (times relative to `startedAt`), for
 * assertion messages. */
export function formatStats(stats: LoadStats, startedAt: number): string {
  const lines: string[] = [];
  for (const kind of loadKinds) {
    const { failures, ...counts } = stats[kind];
    lines.push(`${kind}: ${JSON.stringify(counts)}`);
    for (const f of failures.slice(0, 20)) lines.push(`  +${f.time - startedAt} ms: ${f.error}`);
    if (failures.length > 20) lines.push(`  ... ${failures.length - 20} more`);
  }
  return lines.join("\n");
}
