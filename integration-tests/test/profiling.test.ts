// Profiling on the telemetry listener (`telemetry.profiling`): CPU profiles taken under
// HTTP load decode as pprof protobuf and as an SVG flame graph naming Oxy's functions,
// the heap profile is gzipped pprof, /debug/runtime reports the runtimes and connection
// tasks; bad queries are 400, everything is 404 with profiling off, and clients from a
// non-loopback address get 403 unless `allow_remote`.

import assert from "node:assert/strict";
import { before, test } from "node:test";
import { gunzipSync } from "node:zlib";
import protobuf from "protobufjs";
import { Netns } from "../lib/netns.ts";
import { OxyProcess } from "../lib/oxy.ts";

// perftools.profiles.Profile, with the field numbers of google/pprof proto/profile.proto.
const int64 = (id: number) => ({ type: "int64", id });
const uint64 = (id: number) => ({ type: "uint64", id });
const repeated = (type: string, id: number) => ({ rule: "repeated", type, id });
const pprofRoot = protobuf.Root.fromJSON({
  nested: {
    perftools: {
      nested: {
        profiles: {
          nested: {
            Profile: {
              fields: {
                sampleType: repeated("ValueType", 1),
                sample: repeated("Sample", 2),
                mapping: repeated("Mapping", 3),
                location: repeated("Location", 4),
                function: repeated("Function", 5),
                stringTable: repeated("string", 6),
                dropFrames: int64(7),
                keepFrames: int64(8),
                timeNanos: int64(9),
                durationNanos: int64(10),
                periodType: { type: "ValueType", id: 11 },
                period: int64(12),
                comment: repeated("int64", 13),
                defaultSampleType: int64(14),
              },
            },
            ValueType: { fields: { type: int64(1), unit: int64(2) } },
            Sample: { fields: { locationId: repeated("uint64", 1), value: repeated("int64", 2), label: repeated("Label", 3) } },
            Label: { fields: { key: int64(1), str: int64(2), num: int64(3), numUnit: int64(4) } },
            Mapping: {
              fields: {
                id: uint64(1),
                memoryStart: uint64(2),
                memoryLimit: uint64(3),
                fileOffset: uint64(4),
                filename: int64(5),
                buildId: int64(6),
                hasFunctions: { type: "bool", id: 7 },
                hasFilenames: { type: "bool", id: 8 },
                hasLineNumbers: { type: "bool", id: 9 },
                hasInlineFrames: { type: "bool", id: 10 },
              },
            },
            Location: { fields: { id: uint64(1), mappingId: uint64(2), address: uint64(3), line: repeated("Line", 4), isFolded: { type: "bool", id: 5 } } },
            Line: { fields: { functionId: uint64(1), line: int64(2) } },
            Function: { fields: { id: uint64(1), name: int64(2), systemName: int64(3), filename: int64(4), startLine: int64(5) } },
          },
        },
      },
    },
  },
});
const ProfileType = pprofRoot.lookupType("perftools.profiles.Profile");

/** A decoded profile, 64-bit numbers as strings. */
interface Profile {
  sampleType: { type: string; unit: string }[];
  sample: { locationId: string[]; value: string[] }[];
  mapping: { id: string; filename: string; buildId: string }[];
  location: { id: string; line: { functionId: string }[] }[];
  function: { id: string; name: string }[];
  stringTable: string[];
}

/** Decodes pprof protobuf and checks that it hangs together: string 0 is empty, every
 * sample has one value per sample type, every location and function it names exists. */
function decodeProfile(bytes: Buffer): Profile {
  const profile = ProfileType.toObject(ProfileType.decode(bytes), { longs: String, arrays: true, defaults: true }) as unknown as Profile;
  const strings = profile.stringTable;
  assert.equal(strings[0], "", "string_table[0] is the empty string");
  const locations = new Set(profile.location.map((l) => l.id));
  const functions = new Set(profile.function.map((f) => f.id));
  for (const sample of profile.sample) {
    assert.equal(sample.value.length, profile.sampleType.length, "one value per sample type");
    for (const id of sample.locationId) assert.ok(locations.has(id), `location ${id} exists`);
  }
  for (const location of profile.location) {
    for (const line of location.line) assert.ok(functions.has(line.functionId), `function ${line.functionId} exists`);
  }
  for (const f of profile.function) assert.ok(Number(f.name) < strings.length, "function names are in the string table");
  return profile;
}

/** `type/unit` of each sample type. */
function sampleTypes(profile: Profile): string[] {
  return profile.sampleType.map((t) => `${profile.stringTable[Number(t.type)]}/${profile.stringTable[Number(t.unit)]}`);
}

/** The names of the functions the profile's samples pass through. */
function functionNames(profile: Profile): string[] {
  return profile.function.map((f) => profile.stringTable[Number(f.name)]);
}

async function get(url: string): Promise<{ status: number; type: string; body: Buffer }> {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: Buffer.from(await res.arrayBuffer()) };
}

let oxy: OxyProcess;

before(async () => {
  oxy = await OxyProcess.start({
    binary: "fixture-app",
    settings: {
      server: { worker_threads: 2 },
      telemetry: { profiling: { enabled: true } },
      endpoints: [{ name: "web", listen: ["127.0.0.1:0"], app: { respond_path: "/hello" } }],
    },
  });
});


/** Sends requests on `concurrency` keep-alive connections until `work` settles; returns
 * its result and how many requests were answered 200. */
async function underLoad<T>(work: Promise<T>, concurrency = 4): Promise<{ result: T; requests: number }> {
  let done = false;
  let requests = 0;
  const settled = work.finally(() => (done = true));
  const clients = Array.from({ length: concurrency }, async () => {
    while (!done) {
      const res = await fetch(`${oxy.url("web")}/hello`);
      await res.arrayBuffer();
      assert.equal(res.status, 200);
      requests++;
    }
  });
  const [result] = await Promise.all([settled, ...clients]);
  return { result, requests };
}

test("CPU profiles under load: pprof protobuf and an SVG flame graph that name oxy:: functions", async () => {
  const { result: pprof, requests } = await underLoad(get(`${oxy.telemetryUrl}/debug/pprof/profile?seconds=2`));
  assert.ok(requests > 0);
  assert.equal(pprof.status, 200, pprof.body.toString());
  assert.equal(pprof.type, "application/octet-stream");
  assert.notDeepEqual([...pprof.body.subarray(0, 2)], [0x1f, 0x8b], "the CPU profile is not gzipped");
  const profile = decodeProfile(pprof.body);
  assert.ok(profile.sample.length > 0, "samples were taken");
  assert.ok(sampleTypes(profile).includes("cpu/nanoseconds"), `sample types ${sampleTypes(profile)}`);
  assert.ok(
    functionNames(profile).some((name) => name.includes("oxy::")),
    `an oxy:: function among ${functionNames(profile).slice(0, 20)}`,
  );

  const { result: svg } = await underLoad(get(`${oxy.telemetryUrl}/debug/pprof/profile?seconds=2&format=svg`));
  assert.equal(svg.status, 200, svg.body.toString());
  assert.equal(svg.type, "image/svg+xml");
  const text = svg.body.toString();
  assert.match(text, /^(<\?xml|<svg)/);
  assert.match(text, /<svg[\s>]/);
  assert.match(text, /<title>[^<]*oxy::[^<]*\(\d+ samples?, [\d.]+%\)<\/title>/, "a frame of an oxy:: function");
  assert.match(text, /<\/svg>\s*$/);
});

test("the heap profile is gzipped pprof protobuf of live space in bytes, with the binary's mapping", async () => {
  const heap = await get(`${oxy.telemetryUrl}/debug/pprof/heap`);
  assert.equal(heap.status, 200, heap.body.toString());
  assert.deepEqual([...heap.body.subarray(0, 2)], [0x1f, 0x8b], "gzip magic");
  const profile = decodeProfile(gunzipSync(heap.body));
  assert.deepEqual(sampleTypes(profile), ["inuse_space/bytes"]);
  assert.ok(profile.sample.length > 0, "live sampled allocations after the load");
  // Unsymbolized (addresses only): the main binary's mapping names it and its build id,
  // for `pprof` to symbolize with the binary.
  const binary = profile.mapping.map((m) => ({ file: profile.stringTable[Number(m.filename)], buildId: profile.stringTable[Number(m.buildId)] }));
  assert.ok(
    binary.some((m) => m.file.endsWith("/fixture-app") && /^[0-9a-f]{40}$/.test(m.buildId)),
    `a mapping of the fixture-app binary with its build id: ${JSON.stringify(binary.slice(0, 3))}`,
  );
});

test("/debug/runtime reports the workers, the per-thread runtimes and the connection tasks that served traffic", async () => {
  const res = await get(`${oxy.telemetryUrl}/debug/runtime`);
  assert.equal(res.status, 200);
  assert.match(res.type, /^application\/json/);
  const runtime = JSON.parse(res.body.toString());
  assert.ok(runtime.workers >= 1, JSON.stringify(runtime));
  assert.equal(runtime.per_worker.length, runtime.workers);
  assert.ok(runtime.alive_tasks >= 1);
  assert.equal(typeof runtime.global_queue_depth, "number");
  const { busy_ratio, elapsed_s } = runtime.since_last_report;
  assert.ok(Number.isFinite(busy_ratio) && busy_ratio >= 0 && busy_ratio <= 1 && elapsed_s > 0, JSON.stringify(runtime.since_last_report));
  assert.ok(runtime.connection_tasks.instrumented > 0, JSON.stringify(runtime.connection_tasks));
  assert.ok(runtime.connection_tasks.polls > 0);
  // The two per-thread runtimes (`server.scheduling: per_thread`, the default) served
  // the HTTP connections.
  assert.equal(runtime.per_thread.length, 2, JSON.stringify(runtime.per_thread));
  for (const thread of runtime.per_thread) {
    assert.ok(thread.alive_tasks >= 1, "each accepts on the listener");
    assert.ok(Number.isInteger(thread.parks) && Number.isFinite(thread.busy_s), JSON.stringify(thread));
  }
  assert.ok(runtime.per_thread.reduce((sum: number, t: { busy_s: number }) => sum + t.busy_s, 0) > 0);
});

test("bad profile queries are 400, unknown /debug paths 404", async () => {
  for (const query of ["seconds=0", "seconds=301", "seconds=two", "format=png", "interval=1"]) {
    const res = await get(`${oxy.telemetryUrl}/debug/pprof/profile?${query}`);
    assert.equal(res.status, 400, `${query}: ${res.body}`);
  }
  assert.equal((await get(`${oxy.telemetryUrl}/debug/pprof/goroutine`)).status, 404);
});

test("the profiled process stops cleanly", async () => {
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
  assert.doesNotMatch(oxy.logs(), /seccomp|profile failed/, "the profilers made no forbidden call and did not fail");
});

test("profiling off (the default): every /debug path is 404", async () => {
  const off = await OxyProcess.start({ binary: "oxy", settings: {} });
  for (const path of ["/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/runtime"]) {
    const res = await off.telemetry(path);
    assert.equal(res.status, 404, `${path}: ${res.body}`);
  }
  assert.deepEqual(await off.stop(), { code: 0, signal: null });
});

test("clients from a non-loopback address get 403 unless allow_remote", { skip: process.getuid?.() !== 0 && "needs root (a network namespace)" }, async () => {
  // In a fresh namespace the telemetry listener is on a documentation address on `lo`:
  // curl there connects from that address, which is not loopback.
  const ns = await Netns.create("prof");
  await ns.addAddress("lo", "192.0.2.1/32");
  for (const allowRemote of [false, true]) {
    const remote = await OxyProcess.start({
      binary: "oxy",
      netns: ns.name,
      settings: { telemetry: { listen: "192.0.2.1:0", profiling: { enabled: true, allow_remote: allowRemote } } },
    });
    assert.equal((await remote.telemetry("/health")).status, 200);
    const res = await remote.telemetry("/debug/runtime");
    assert.equal(res.status, allowRemote ? 200 : 403, res.body);
    if (!allowRemote) assert.match(res.body, /allow_remote/);
    assert.deepEqual(await remote.stop(), { code: 0, signal: null });
  }
  ns.destroy();
});
