// The http-firewall example app with its shipped config (config/http-firewall.yaml),
// adjusted only for the test: listeners on port 0, the reverse proxy's upstream and the inspected
// ports pointing at local origins (plain HTTP and HTTPS), a test interception CA and the
// HTTPS origin's CA as the upstream trust, one body rule more on the forward proxy, and a
// local DNS server as the resolver. Host and method rules on the forward proxy
// (absolute-form and CONNECT), path, method and header rules inside decapsulated CONNECT
// tunnels, the same rules (and a body rule) inside intercepted TLS, the reverse proxy's
// block page over HTTP/1.1 and h2c, streaming body inspection, and config errors.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { connect as h2connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { ProxyAgent, fetch as undiciFetch } from "undici";
import { parse } from "yaml";
import { makeInterceptionCa, makePki, type TestPki } from "../lib/certs.ts";
import { curl, lastResponse as response } from "../lib/curl.ts";
import { startDnsServer, type DnsServer } from "../lib/dns-server.ts";
import { startHttpsOrigin, type HttpsOrigin } from "../lib/https-origin.ts";
import { startOrigin, type Origin } from "../lib/origin.ts";
import { OxyProcess, repoRoot, runToExit, sleep, writeConfig } from "../lib/oxy.ts";

const shipped = parse(readFileSync(join(repoRoot, "config", "http-firewall.yaml"), "utf8"));

/** Stands in for the shipped interception CA (which `make certs` writes). */
const interceptionCa = makeInterceptionCa();

/** Names the test resolver knows, all on loopback. The blocked ones are here too, so a
 * rule that failed to block would let the request through to the origin. */
const names = [
  "malware.example",
  "sub.malware.example",
  "tracker.example",
  "a.b.tracker.example",
  "nottracker.example",
  "ads.example",
  "x.ads.example",
  "something.paste.example",
  "secure.example",
];

/** The shipped config with every listener on port 0 (the kernel picks). */
function onPortZero(): Record<string, any> {
  const settings = structuredClone(shipped);
  assert.equal(settings.telemetry.listen, "127.0.0.1:9090");
  settings.telemetry.listen = "127.0.0.1:0";
  assert.deepEqual(settings.endpoints.map((e: any) => [e.name, e.listen]), [
    ["forward", ["127.0.0.1:8080"]],
    ["site", ["127.0.0.1:8081"]],
  ]);
  // Forwarding and CONNECT are off by default: the forward proxy turns them on, the
  // reverse proxy leaves them off.
  const [forward, site] = settings.endpoints;
  assert.deepEqual([forward.http.forward_proxy, forward.http.connect], [true, true]);
  assert.deepEqual([site.http.forward_proxy, site.http.connect, site.http.connect_udp], [undefined, undefined, undefined]);
  // The forward proxy looks into CONNECT tunnels to ports 80 and 443, and intercepts the
  // TLS in them with the CA `make certs` writes; the reverse proxy intercepts nothing.
  assert.deepEqual(forward.app.inspect_ports, [80, 443]);
  assert.match(forward.tls_interception?.ca_chain ?? "", /(^|\/)certs\/interception-ca\.crt$/);
  assert.match(forward.tls_interception?.ca_key ?? "", /(^|\/)certs\/interception-ca\.key$/);
  assert.equal(site.tls_interception, undefined);
  for (const endpoint of settings.endpoints) endpoint.listen = ["127.0.0.1:0"];
  // Relative paths would be read from the temp directory the test writes the settings to.
  forward.tls_interception = { ...forward.tls_interception, ca_chain: interceptionCa.cert, ca_key: interceptionCa.key };
  return settings;
}

/** The shipped config on port 0, the origin as upstream and inspected port, the HTTPS
 * origin as the other inspected port (its CA trusted upstream), a body rule on the forward
 * proxy's uploads, and the test DNS server as the only resolver. */
function adjusted(origin: Origin, secure: HttpsOrigin, securePki: TestPki, dns: DnsServer): Record<string, any> {
  const settings = onPortZero();
  settings.dns = { groups: [{ name: "test", servers: [{ address: `127.0.0.1:${dns.port}` }] }] };
  const forward = settings.endpoints.find((e: any) => e.name === "forward");
  forward.app.inspect_ports = [origin.port, secure.port];
  forward.app.rules.push({ name: "no-keys-in-uploads", path_prefixes: ["/upload"], body_contains: ["AKIA0000SECRETKEY"] });
  forward.http.client = { ...forward.http.client, ca_file: securePki.ca };
  const site = settings.endpoints.find((e: any) => e.name === "site");
  site.http.upstream = `http://127.0.0.1:${origin.port}`;
  return settings;
}

/** The rule and block id a block page shows. */
function blockPage(body: string): { rule: string; id: string } {
  const match = body.match(/<p>Rule: <code>([^<]*)<\/code><\/p><p>Block id: <code>([^<]*)<\/code><\/p>/);
  assert.ok(match, `not a block page: ${body}`);
  return { rule: match[1], id: match[2] };
}

/** The proxy's status for curl's CONNECT (`%{http_connect}`), with curl's exit code. */
async function connectStatus(args: string[]): Promise<{ status: number; code: number }> {
  const run = promisify(execFile);
  try {
    const { stdout } = await run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_connect}", ...args], { timeout: 15_000 });
    return { status: Number(stdout), code: 0 };
  } catch (e: any) {
    return { status: Number(e.stdout), code: typeof e.code === "number" ? e.code : -1 };
  }
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** POSTs `parts` with node:http, each in its own write (a pause between them, so each
 * reaches the proxy as its own chunk); resolves with the response. The pause is pacing,
 * not a wait for an event: nothing tells the client that the proxy has read a chunk, and
 * the test is that a pattern split across reads is still found, so the writes are spaced
 * well beyond the time the proxy takes to read one. */
function postInWrites(port: number, path: string, parts: (string | Buffer)[], contentType = "application/octet-stream"): Promise<Reply> {
  return new Promise((ok, fail) => {
    const req = httpRequest(
      { host: "127.0.0.1", port, path, method: "POST", agent: false, headers: { "content-type": contentType } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on("error", fail);
      },
    );
    req.on("error", fail);
    (async () => {
      for (const [i, part] of parts.entries()) {
        if (i > 0) await sleep(300);
        if (req.destroyed) return;
        req.write(part);
      }
      req.end();
    })();
  });
}

describe("http-firewall with its shipped config", () => {
  let origin: Origin;
  /** A second origin, on a port that is not inspected. */
  let plain: Origin;
  /** An HTTPS origin on an inspected port, its certificate from `securePki`. */
  let secure: HttpsOrigin;
  let securePki: TestPki;
  let dns: DnsServer;
  let oxy: OxyProcess;
  let forward: string;
  let site: string;
  let sitePort: number;
  /** Files to upload. */
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "oxy-firewall-"));
    origin = await startOrigin();
    plain = await startOrigin();
    securePki = makePki(["secure.example"]);
    secure = await startHttpsOrigin(securePki.server, "secure");
    dns = await startDnsServer(Object.fromEntries(names.map((n) => [n, ["127.0.0.1"]])));
    oxy = await OxyProcess.start({ binary: "http-firewall", settings: adjusted(origin, secure, securePki, dns) });
    forward = oxy.url("forward");
    site = oxy.url("site");
    sitePort = oxy.port("site");
  });

  after(async () => {
    await origin.close();
    await plain.close();
    await secure.close();
    await dns.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** `firewall_blocked_total` for `rule` (0 before the first block). */
  const blocked = async (rule: string) => (await oxy.metric(`firewall_blocked_total{rule="${rule}"}`)) ?? 0;

  /** Asserts `r` (curl -D -) is the block page of `rule`, with the same id in the
   * header, the page and the log line; returns the id. */
  async function assertBlockPage(r: { status: number; body: string; stderr: string }, rule: string): Promise<string> {
    assert.equal(r.status, 403, r.stderr + oxy.logs().slice(-3000));
    const { headers, body } = response(r.body);
    assert.match(headers["content-type"] ?? "", /^text\/html/);
    const page = blockPage(body);
    assert.equal(page.rule, rule);
    assert.match(page.id, /^[0-9a-f]{16}$/);
    assert.equal(headers["x-firewall-block-id"], page.id, "the header carries the page's id");
    const line = await oxy.waitForLog(new RegExp(`^.*block_id=${page.id}.*$`, "m"));
    assert.match(line[0], new RegExp(`rule="?${rule}"?(\\s|$)`), "the log line names the rule");
    return page.id;
  }

  test("forward proxy: host rules (exact, domain and subdomains, subdomains only) and a method rule", async () => {
    const start = await blocked("no-trackers");
    for (const host of ["malware.example", "tracker.example", "a.b.tracker.example", "x.ads.example", "MalWare.Example"]) {
      const r = await curl(["-D", "-", "-x", forward, `http://${host}:${origin.port}/page`]);
      await assertBlockPage(r, "no-trackers");
    }
    assert.equal(await blocked("no-trackers"), start + 5);

    // Not blocked: a subdomain of an exact host, a name that only ends like a listed
    // domain, and the bare domain of a `*.` pattern. They resolve through the test DNS
    // server and reach the origin.
    for (const host of ["sub.malware.example", "nottracker.example", "ads.example"]) {
      const r = await curl(["-x", forward, `http://${host}:${origin.port}/allowed`]);
      assert.equal(r.status, 200, `${host}: ${r.body}${r.stderr}`);
      assert.equal(JSON.parse(r.body).headers.host, `${host}:${origin.port}`);
    }
    assert.equal(await blocked("no-trackers"), start + 5);
    const reached = origin.seen.map((s) => String(s.headers.host).split(":")[0]);
    for (const host of ["malware.example", "tracker.example", "a.b.tracker.example", "x.ads.example"]) {
      assert.ok(!reached.includes(host), `${host} never reaches the origin`);
      assert.ok(!dns.queries.some((q) => q.startsWith(`${host}/`)), `${host} is blocked before it is resolved`);
    }

    // Over CONNECT, the host rules see the CONNECT target.
    const tunnel = await connectStatus(["-p", "-x", forward, "https://x.ads.example/"]);
    assert.equal(tunnel.status, 403);
    assert.notEqual(tunnel.code, 0);
    const tracker = await connectStatus(["-p", "-x", forward, `http://a.tracker.example:${plain.port}/`]);
    assert.equal(tracker.status, 403);
    const open = await curl(["-p", "-x", forward, `http://ads.example:${plain.port}/tunneled`]);
    assert.equal(open.status, 200, open.stderr);
    assert.equal(JSON.parse(open.body).url, "/tunneled");
    assert.equal(await blocked("no-trackers"), start + 7);

    // The method rule: POST and PUT to the paste sites are blocked, GET is not.
    const pasteBefore = await blocked("no-uploads-to-paste-sites");
    const paste = `http://something.paste.example:${origin.port}/new`;
    const post = await curl(["-D", "-", "-x", forward, "--data-binary", "leak", paste]);
    await assertBlockPage(post, "no-uploads-to-paste-sites");
    const put = await curl(["-D", "-", "-x", forward, "-X", "PUT", "--data-binary", "leak", paste]);
    await assertBlockPage(put, "no-uploads-to-paste-sites");
    const get = await curl(["-x", forward, paste]);
    assert.equal(get.status, 200, get.stderr);
    assert.equal(JSON.parse(get.body).method, "GET");
    assert.ok(!origin.seen.some((s) => s.body === "leak"), "the blocked bodies never reach the origin");
    assert.equal(await blocked("no-uploads-to-paste-sites"), pasteBefore + 2);
  });

  test("forward proxy: host rules meet the authority the request is sent to, whatever Host says", async () => {
    // A blocked target behind an allowed Host is blocked ...
    const smuggled = await curl(["-D", "-", "-x", forward, "-H", "Host: sub.malware.example", `http://malware.example:${origin.port}/smuggled`]);
    await assertBlockPage(smuggled, "no-trackers");
    // ... and an allowed target reaches its origin with its own authority as Host, not
    // the blocked name the client wrote (which a shared origin would route by).
    const before = origin.seen.length;
    const allowed = await curl(["-x", forward, "-H", "Host: a.tracker.example", `http://sub.malware.example:${origin.port}/host-check`]);
    assert.equal(allowed.status, 200, allowed.stderr);
    const seen = origin.seen.slice(before).find((r) => r.url === "/host-check");
    assert.equal(seen?.headers.host, `sub.malware.example:${origin.port}`);
  });

  test("forward proxy: a fully qualified name with a trailing dot meets the same host rules", async () => {
    // `malware.example.` is the name `malware.example`: resolvers treat them alike (the
    // test DNS server answers both), so the host rules must too.
    const start = await blocked("no-trackers");
    for (const host of ["malware.example.", "a.b.tracker.example.", "x.ads.example."]) {
      const r = await curl(["-D", "-", "-x", forward, `http://${host}:${origin.port}/fqdn`]);
      await assertBlockPage(r, "no-trackers");
    }
    const tunnel = await connectStatus(["-p", "-x", forward, `http://malware.example.:${plain.port}/fqdn-tunnel`]);
    assert.equal(tunnel.status, 403);
    assert.equal(await blocked("no-trackers"), start + 4);
    assert.ok(!origin.seen.some((s) => s.url === "/fqdn"));
    assert.ok(!plain.seen.some((s) => s.url === "/fqdn-tunnel"));
  });

  test("forward proxy: CONNECT to an inspected port is decapsulated and its requests meet every rule", async () => {
    const ended = async (reason: string) => (await oxy.metric(`oxy_tunnel_ended_total{endpoint="forward",reason="${reason}"}`)) ?? 0;
    const decapsulated = await ended("decapsulated");
    const target = `http://127.0.0.1:${origin.port}`;

    const dotfile = await curl(["-D", "-", "-p", "-x", forward, `${target}/.git/config`]);
    await assertBlockPage(dotfile, "no-dotfiles");
    const fine = await curl(["-D", "-", "-p", "-x", forward, `${target}/fine`]);
    assert.equal(fine.status, 200, fine.stderr);
    const seen = JSON.parse(response(fine.body).body);
    assert.equal(seen.url, "/fine");
    assert.equal(seen.headers.host, `127.0.0.1:${origin.port}`);
    const trace = await curl(["-D", "-", "-p", "-x", forward, "-X", "TRACE", `${target}/anything`]);
    await assertBlockPage(trace, "no-trace");
    // The scanner's user agent only on the request inside the tunnel (a harmless one on
    // the CONNECT): the CONNECT passes, the request is blocked.
    const sqlmap = "User-Agent: sqlmap/1.7.2#stable (https://sqlmap.org)";
    const scanner = await curl(["-D", "-", "-p", "-x", forward, "--proxy-header", "User-Agent: curl", "-H", sqlmap, `${target}/search?q=1`]);
    await assertBlockPage(scanner, "scanners");
    // With it on the CONNECT itself, the tunnel is refused (not counted as decapsulated).
    const refused = await connectStatus(["-p", "-x", forward, "--proxy-header", sqlmap, `${target}/search?q=2`]);
    assert.equal(refused.status, 403);
    assert.ok(origin.seen.some((s) => s.url === "/fine"));
    for (const url of ["/.git/config", "/anything", "/search?q=1", "/search?q=2"]) {
      assert.ok(!origin.seen.some((s) => s.url === url), `${url} never reaches the origin`);
    }

    // undici's ProxyAgent: several requests in one decapsulated tunnel, each judged.
    const agent = new ProxyAgent({ uri: forward, connections: 1 });
    const first = await undiciFetch(`${target}/first`, { dispatcher: agent });
    assert.equal(first.status, 200);
    assert.equal(JSON.parse(await first.text()).url, "/first");
    const env = await undiciFetch(`${target}/.env`, { dispatcher: agent });
    assert.equal(env.status, 403);
    assert.equal(blockPage(await env.text()).rule, "no-dotfiles");
    const last = await undiciFetch(`${target}/last`, { dispatcher: agent });
    assert.equal(last.status, 200);
    await last.text();
    await agent.close();

    // An HTTP/2 CONNECT stream (node:http2, h2c) to the inspected port is decapsulated
    // too: two pipelined requests inside it, the second blocked.
    const session = h2connect(forward);
    const h2tunnel = session.request({ ":method": "CONNECT", ":authority": `127.0.0.1:${origin.port}` });
    const connected = await new Promise<number>((ok, fail) => {
      h2tunnel.on("response", (h) => ok(Number(h[":status"])));
      h2tunnel.on("error", fail);
    });
    assert.equal(connected, 200);
    const host = `Host: 127.0.0.1:${origin.port}\r\n`;
    h2tunnel.end(`GET /h2-fine HTTP/1.1\r\n${host}\r\nGET /.git/HEAD HTTP/1.1\r\n${host}Connection: close\r\n\r\n`);
    const inner = await new Promise<string>((ok, fail) => {
      let text = "";
      h2tunnel.on("data", (d) => (text += d));
      h2tunnel.on("end", () => ok(text));
      h2tunnel.on("error", fail);
    });
    session.close();
    const second = inner.indexOf("HTTP/1.1 403 ");
    assert.match(inner, /^HTTP\/1\.1 200 /, inner);
    assert.ok(second > 0, inner);
    const chunked = response(inner.slice(0, second)).body; // the JSON inside its chunk
    assert.equal(JSON.parse(chunked.slice(chunked.indexOf("{"), chunked.lastIndexOf("}") + 1)).url, "/h2-fine");
    assert.equal(blockPage(inner.slice(second)).rule, "no-dotfiles");
    assert.ok(!origin.seen.some((s) => s.url === "/.git/HEAD"));

    await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="forward",reason="decapsulated"}', decapsulated + 6);
    const records = [...oxy.logs().matchAll(/oxy::audit: audit record=(\{.*\})/g)].map((m) => JSON.parse(m[1]));
    const inspected = records.filter((r) => r.target === `127.0.0.1:${origin.port}`);
    assert.equal(inspected.length, 6, "one record per tunnel (undici's three requests shared one)");
    for (const record of inspected) {
      assert.equal(record.endpoint, "forward");
      assert.equal(record.close_reason, "decapsulated");
    }

    // The control: a tunnel to a port that is not inspected carries the same request
    // to its target untouched; no path rule can see inside it.
    const completed = await ended("completed");
    const opaque = await curl(["-p", "-x", forward, `http://127.0.0.1:${plain.port}/.git/config`]);
    assert.equal(opaque.status, 200, opaque.stderr);
    assert.equal(JSON.parse(opaque.body).url, "/.git/config");
    assert.ok(plain.seen.some((s) => s.url === "/.git/config"));
    await oxy.waitForMetric('oxy_tunnel_ended_total{endpoint="forward",reason="completed"}', completed + 1);
    const record = (await oxy.waitForLog(new RegExp(`oxy::audit: audit record=(\\{[^\\n]*"target":"127\\.0\\.0\\.1:${plain.port}"[^\\n]*\\})`)))[1];
    assert.equal(JSON.parse(record).close_reason, "completed");
  });

  test("forward proxy: CONNECT to an inspected HTTPS port is intercepted and its requests meet every rule", async () => {
    const counts = async () =>
      Object.fromEntries(await Promise.all(["no-dotfiles", "scanners", "no-keys-in-uploads"].map(async (r) => [r, await blocked(r)])));
    const start = await counts();
    const target = `https://secure.example:${secure.port}`;
    const tls = ["-x", forward, "--cacert", interceptionCa.cert];

    // Trusting only the origin's own CA, the client refuses the certificate it is shown:
    // the firewall answered the TLS itself.
    const refused = await curl(["-x", forward, "--cacert", securePki.ca, `${target}/fine-tls`]);
    assert.equal(refused.code, 60, `curl exit ${refused.code} (60: certificate problem): ${refused.stderr}`);

    // A global path rule: the block page inside TLS, over HTTP/2 and HTTP/1.1.
    await assertBlockPage(await curl(["-D", "-", ...tls, "--http2", `${target}/.git/config`]), "no-dotfiles");
    await assertBlockPage(await curl(["-D", "-", ...tls, "--http1.1", `${target}/.env`]), "no-dotfiles");
    // The scanner's user agent on the request inside TLS only (a harmless one on the CONNECT).
    const sqlmap = "User-Agent: sqlmap/1.7.2#stable (https://sqlmap.org)";
    await assertBlockPage(await curl(["-D", "-", ...tls, "--proxy-header", "User-Agent: curl", "-H", sqlmap, `${target}/search?q=tls`]), "scanners");

    // Allowed requests reach the origin over TLS, bodies whole.
    const fine = await curl(["-D", "-", ...tls, `${target}/fine-tls`]);
    assert.equal(fine.status, 200, fine.stderr + oxy.logs().slice(-3000));
    const answer = JSON.parse(response(fine.body).body);
    assert.deepEqual([answer.origin, answer.method, answer.path], ["secure", "GET", "/fine-tls"]);
    const fineUpload = await curl([...tls, "-H", "content-type: application/octet-stream", "--data-binary", "aws_region = x", `${target}/upload/fine`]);
    assert.equal(fineUpload.status, 200, fineUpload.stderr + fineUpload.body);
    assert.equal(secure.seen.find((s) => s.path === "/upload/fine")?.body, "aws_region = x");
    const seen = secure.seen.find((s) => s.path === "/fine-tls");
    assert.equal(seen?.authority, `secure.example:${secure.port}`);

    // The forward proxy's body rule (added by the test) meets an upload inside TLS.
    const upload = await curl([...tls, "-H", "content-type: application/octet-stream", "--data-binary", "aws_access_key_id = AKIA0000SECRETKEY", `${target}/upload/keys`]);
    assert.equal(upload.status, 403, upload.stderr + upload.body);
    assert.match(upload.body, /^blocked by rule no-keys-in-uploads \(block id [0-9a-f]{16}\)/);

    for (const path of ["/.git/config", "/.env", "/search?q=tls"]) {
      assert.ok(!secure.started.some((s) => s.endsWith(` ${path}`)), `${path} never reaches the origin`);
    }
    assert.ok(!secure.seen.some((s) => s.path === "/upload/keys"), "the blocked upload is not completed upstream: " + JSON.stringify(secure.seen.filter((s) => s.path === "/upload/keys")));
    assert.ok(!secure.seen.some((s) => s.body.includes("AKIA0000SECRETKEY")));
    assert.deepEqual(await counts(), {
      "no-dotfiles": start["no-dotfiles"] + 2,
      scanners: start.scanners + 1,
      "no-keys-in-uploads": start["no-keys-in-uploads"] + 1,
    });
    const intercepted = (await oxy.metric('oxy_tls_interceptions_total{endpoint="forward",outcome="intercepted"}')) ?? 0;
    assert.ok(intercepted >= 6, `${intercepted} interceptions counted`);
  });

  test("reverse proxy: path, method and header rules with a block page over HTTP/1.1 and h2c", async () => {
    const counts = async () =>
      Object.fromEntries(await Promise.all(["admin-area", "no-destructive-api", "no-dotfiles", "scanners"].map(async (r) => [r, await blocked(r)])));
    const start = await counts();

    const ids: string[] = [];
    for (const path of ["/admin", "/admin/x", "/administrator"]) {
      ids.push(await assertBlockPage(await curl(["-D", "-", `${site}${path}`]), "admin-area"));
    }
    assert.equal(new Set(ids).size, ids.length, "every block has its own id");
    // Path rules see the path as the origin would resolve it.
    for (const path of ["/%61dmin", "//admin", "/./admin/x", "/x/../admin"]) {
      await assertBlockPage(await curl(["-D", "-", "--path-as-is", `${site}${path}`]), "admin-area");
    }
    await assertBlockPage(await curl(["-D", "-", "--path-as-is", `${site}/static/../.git/config`]), "no-dotfiles");
    // A prefix is a string prefix: /administrator is under /admin; /public/admin is not.
    const notAdmin = await curl([`${site}/public/admin`]);
    assert.equal(notAdmin.status, 200);
    assert.equal(JSON.parse(notAdmin.body).url, "/public/admin");

    await assertBlockPage(await curl(["-D", "-", "-X", "DELETE", `${site}/api/v2/users`]), "no-destructive-api");
    const list = await curl([`${site}/api/v2/users`]);
    assert.equal(list.status, 200);
    assert.deepEqual([JSON.parse(list.body).method, JSON.parse(list.body).url], ["GET", "/api/v2/users"]);
    const otherDelete = await curl(["-X", "DELETE", `${site}/sessions/1`]);
    assert.equal(otherDelete.status, 200, "DELETE outside the API path is allowed");

    await assertBlockPage(await curl(["-D", "-", `${site}/.env`]), "no-dotfiles");
    await assertBlockPage(await curl(["-D", "-", "-A", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:Port Check)", `${site}/`]), "scanners");
    const browser = await curl(["-A", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", `${site}/home`]);
    assert.equal(browser.status, 200);

    for (const [method, url] of [["GET", "/admin"], ["GET", "/admin/x"], ["GET", "/administrator"], ["DELETE", "/api/v2/users"], ["GET", "/.env"]]) {
      assert.ok(!origin.seen.some((s) => s.method === method && s.url === url), `${method} ${url} never reaches the origin`);
    }
    assert.ok(!origin.seen.some((s) => /nikto/i.test(String(s.headers["user-agent"]))));

    // HTTP/2 with prior knowledge (h2c) gets the same block page.
    const session = h2connect(site);
    const stream = session.request({ ":path": "/admin/settings" });
    const [headers, body] = await new Promise<[Record<string, any>, string]>((ok, fail) => {
      let head: Record<string, any> = {};
      let text = "";
      stream.on("response", (h) => (head = h));
      stream.on("data", (d) => (text += d));
      stream.on("end", () => ok([head, text]));
      stream.on("error", fail);
    });
    session.close();
    assert.equal(headers[":status"], 403);
    assert.match(String(headers["content-type"]), /^text\/html/);
    const page = blockPage(body);
    assert.equal(page.rule, "admin-area");
    assert.equal(headers["x-firewall-block-id"], page.id);
    await oxy.waitForLog(new RegExp(`block_id=${page.id}`));

    assert.deepEqual(await counts(), {
      "admin-area": start["admin-area"] + 8,
      "no-destructive-api": start["no-destructive-api"] + 1,
      "no-dotfiles": start["no-dotfiles"] + 2,
      scanners: start.scanners + 1,
    });
  });

  test("reverse proxy: upload bodies are inspected while they stream", async () => {
    const rule = "secrets-in-uploads";
    const start = await blocked(rule);
    const key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    const expectBlocked = (status: number, body: string) => {
      assert.equal(status, 403, body);
      assert.match(body, new RegExp(`^blocked by rule ${rule} \\(block id [0-9a-f]{16}\\)`));
    };

    // Multipart, as a field and as an uploaded file.
    const multipart = await curl(["-F", `comment=${key}`, "-F", "title=mine", `${site}/upload/form`]);
    expectBlocked(multipart.status, multipart.body);
    writeFileSync(join(dir, "id.pem"), key);
    const file = await curl(["-F", `comment=@${join(dir, "id.pem")}`, `${site}/upload/file`]);
    expectBlocked(file.status, file.body);
    // URL-encoded, with %20 and with + for the spaces.
    const encoded = await curl(["--data-binary", "title=x&comment=-----BEGIN%20PRIVATE%20KEY-----%0AMIIE", `${site}/upload/encoded`]);
    expectBlocked(encoded.status, encoded.body);
    const plus = await curl(["--data-binary", "comment=BEGIN+PRIVATE+KEY", `${site}/upload/plus`]);
    expectBlocked(plus.status, plus.body);
    // A raw body whose needle straddles two writes.
    const split = await postInWrites(sitePort, "/upload/raw", ["aws_access_key_id = AKIA0000SEC", "RETKEY\naws_region = x\n"]);
    expectBlocked(split.status, split.body);
    // A form whose value, or a percent-escape in it, straddles two writes.
    const form = "application/x-www-form-urlencoded";
    const splitWord = await postInWrites(sitePort, "/upload/split-word", ["title=x&comment=BEGIN%20PRI", "VATE%20KEY"], form);
    expectBlocked(splitWord.status, splitWord.body);
    const splitEscape = await postInWrites(sitePort, "/upload/split-escape", ["comment=BEGIN%2", "0PRIVATE%20KEY"], form);
    expectBlocked(splitEscape.status, splitEscape.body);
    const boundary = "firewall-test-boundary";
    const parts = `--${boundary}\r\nContent-Disposition: form-data; name="comment"\r\n\r\n${key}\r\n--${boundary}--\r\n`;
    const cut = parts.indexOf("PRIVATE") + 3;
    const splitPart = await postInWrites(sitePort, "/upload/split-part", [parts.slice(0, cut), parts.slice(cut)], `multipart/form-data; boundary=${boundary}`);
    expectBlocked(splitPart.status, splitPart.body);
    const id = split.body.match(/block id ([0-9a-f]{16})/)![1];
    const line = (await oxy.waitForLog(new RegExp(`^.*block_id=${id}.*$`, "m")))[0];
    assert.match(line, new RegExp(`rule="?${rule}"?(\\s|$)`));

    // A large upload with the needle near its start: blocked, and the origin never
    // gets the whole body.
    const big = Buffer.alloc(8 << 20, "a");
    big.write("AKIA0000SECRETKEY", 1024);
    writeFileSync(join(dir, "big.bin"), big);
    const large = await curl(["-H", "content-type: application/octet-stream", "--data-binary", `@${join(dir, "big.bin")}`, `${site}/upload/big`]);
    expectBlocked(large.status, large.body);
    assert.equal(await blocked(rule), start + 9);
    for (const url of ["/upload/form", "/upload/file", "/upload/encoded", "/upload/plus", "/upload/raw", "/upload/split-word", "/upload/split-escape", "/upload/split-part", "/upload/big"]) {
      assert.ok(!origin.seen.some((s) => s.url === url), `${url} is not completed upstream`);
    }

    // Harmless uploads pass whole.
    const fineForm = await curl(["-F", "comment=looks good", "-F", `note=${key}`, `${site}/upload/ok-form`]);
    assert.equal(fineForm.status, 200, fineForm.body);
    const formSeen = JSON.parse(fineForm.body);
    assert.match(formSeen.body, /looks good/);
    assert.match(formSeen.body, /BEGIN PRIVATE KEY/, "another field may carry the string");
    const fineRaw = await postInWrites(sitePort, "/upload/ok-raw", ["AKIA0000", "SECRET", "-but-not-KEY"]);
    assert.equal(fineRaw.status, 200, fineRaw.body);
    assert.equal(JSON.parse(fineRaw.body).body, "AKIA0000SECRET-but-not-KEY");
    const clean = Buffer.alloc(8 << 20, "b");
    writeFileSync(join(dir, "clean.bin"), clean);
    const cleanLarge = await curl(["-H", "content-type: application/octet-stream", "--data-binary", `@${join(dir, "clean.bin")}`, `${site}/upload/ok-big`]);
    assert.equal(cleanLarge.status, 200, cleanLarge.stderr);
    const seenLarge = origin.seen.find((s) => s.url === "/upload/ok-big");
    assert.equal(seenLarge?.body.length, clean.length);
    assert.equal(seenLarge?.body, clean.toString());

    // The same secrets outside /upload are not this rule's business.
    const elsewhere = await curl(["--data-binary", "comment=BEGIN%20PRIVATE%20KEY&k=AKIA0000SECRETKEY", `${site}/notes`]);
    assert.equal(elsewhere.status, 200);
    assert.equal(JSON.parse(elsewhere.body).body, "comment=BEGIN%20PRIVATE%20KEY&k=AKIA0000SECRETKEY");
    assert.equal(await blocked(rule), start + 9);
  });

  test("stops cleanly", async () => {
    assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  });
});

describe("http-firewall settings", () => {
  /** The shipped config on port 0 with `change` applied, run to its exit. */
  async function runWith(change: (settings: Record<string, any>) => void) {
    const settings = onPortZero();
    // Never asked: these settings fail before anything starts.
    settings.dns = { groups: [{ name: "none", servers: [{ address: "127.0.0.1:9" }] }] };
    change(settings);
    return runToExit("http-firewall", ["--config", writeConfig(settings)]);
  }

  test("a bad path pattern or a header rule without a colon is a settings error (exit 2) naming the rule", async () => {
    const pattern = await runWith((s) => s.app.rules.push({ name: "broken-pattern", path_patterns: ["^/(unclosed"] }));
    assert.equal(pattern.code, 2, pattern.stderr);
    assert.match(pattern.stderr, /rule broken-pattern: bad path pattern "\^\/\(unclosed"/);

    const header = await runWith((s) => {
      const site = s.endpoints.find((e: any) => e.name === "site");
      site.app.rules.push({ name: "colonless", headers: ["user-agent sqlmap"] });
    });
    assert.equal(header.code, 2, header.stderr);
    assert.match(header.stderr, /:\d+:\d+: endpoints\[1\]\.app\.rules\[\d+\]: rule colonless/);
    assert.match(header.stderr, /rule colonless: bad header "user-agent sqlmap".*want `name: value`/);
  });

  test("--check-config rejects a rule the start would reject", async () => {
    const settings = onPortZero();
    settings.app.rules.push({ name: "broken-pattern", path_patterns: ["^/(unclosed"] });
    const checked = await runToExit("http-firewall", ["--check-config", "--config", writeConfig(settings)]);
    assert.equal(checked.code, 2, checked.stderr);
    assert.match(checked.stderr, /rule broken-pattern: bad path pattern/);
  });

  test("--generate-config documents the rule fields", async () => {
    const generated = await runToExit("http-firewall", ["--generate-config"]);
    assert.equal(generated.code, 0);
    assert.match(generated.stdout, /# Hosts: `example\.com` \(exactly\), `\.example\.com` \(it and its subdomains\),\n\s*#\s*# `\*\.example\.com` \(its subdomains only\)\. CONNECT targets count too\./);
    assert.match(generated.stdout, /# Headers as `name: regular expression`/);
    assert.match(generated.stdout, /# Form fields as `field: string`/);
    assert.match(generated.stdout, /^ {6}inspect_ports: \[\]$/m);
  });
});
