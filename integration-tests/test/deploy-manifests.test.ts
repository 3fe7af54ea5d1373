// The deployment files in deploy/ (deploy/README.md): the Kubernetes manifests are valid
// against the API's schemas (a broken copy is refused), agree with each other and with
// the settings they carry (ports, probes, drain timing, selectors, the ConfigMap's copy
// of deploy/oxy.yaml and its checksum), and `oxy --check-config` accepts those settings.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse as parseYaml } from "yaml";
import { readManifests, schemaProblem, unknownFieldProblems } from "../lib/kubernetes-manifests.ts";
import { repoRoot, runToExit, writeConfig } from "../lib/oxy.ts";

const settingsPath = join(repoRoot, "deploy", "oxy.yaml");
const settingsText = readFileSync(settingsPath, "utf8");
const manifests = readManifests(join(repoRoot, "deploy", "kubernetes"));

function only(kind: string): Record<string, any> {
  const found = manifests.filter((m) => m.object.kind === kind);
  assert.equal(found.length, 1, `one ${kind} in deploy/kubernetes`);
  return found[0].object;
}

const configMap = only("ConfigMap");
const deployment = only("Deployment");
const service = only("Service");
const podTemplate = deployment.spec.template;
const container = podTemplate.spec.containers.find((c: any) => c.name === "oxy");
/** The ConfigMap's copy of the settings, as text and parsed. */
const mountedText: string = configMap.data["oxy.yaml"];
const settings = parseYaml(mountedText);

/** Seconds in a humantime duration as Oxy's settings write them (`30s`, `1m 30s`, `500ms`). */
function seconds(duration: string): number {
  const units: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };
  assert.match(duration, /^(\d+(ms|s|m|h) ?)+$/, "a duration in ms, s, m or h");
  return [...duration.matchAll(/(\d+)(ms|s|m|h)/g)].reduce((sum, [, n, unit]) => sum + Number(n) * units[unit], 0);
}

function portOfAddress(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

/** A container port given by number or by name, as a number. */
function containerPort(port: number | string): number {
  if (typeof port === "number") return port;
  const named = container.ports.find((p: any) => p.name === port);
  assert.ok(named, `container port named ${port}`);
  return named.containerPort;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

test("every manifest is valid against the Kubernetes schema of its kind", async () => {
  assert.deepEqual(
    manifests.map((m) => m.object.kind).sort(),
    ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"],
  );
  for (const { file, object } of manifests) {
    assert.equal(await schemaProblem(object), null, file);
  }
  assert.deepEqual(unknownFieldProblems(manifests.map((m) => m.object)), []);
});

test("a manifest with a wrong field type or an unknown field is refused", async () => {
  const wrongType = structuredClone(deployment);
  wrongType.spec.template.spec.containers[0].ports[0].containerPort = "8080";
  assert.match((await schemaProblem(wrongType)) ?? "", /containerPort must be integer/);

  const wrongGrace = structuredClone(deployment);
  wrongGrace.spec.template.spec.terminationGracePeriodSeconds = "60s";
  assert.match((await schemaProblem(wrongGrace)) ?? "", /terminationGracePeriodSeconds must be integer/);

  const misspelled = structuredClone(deployment);
  misspelled.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
  const problems = unknownFieldProblems([misspelled]);
  assert.equal(problems.length, 1, problems.join("\n"));
  assert.match(problems[0], /readOnlyRootFileSystem/);
});

test("the ConfigMap carries deploy/oxy.yaml verbatim, and the pods' checksum of it", () => {
  assert.equal(mountedText, settingsText, "configmap.yaml's data.oxy.yaml must be a copy of deploy/oxy.yaml");
  const checksum = createHash("sha256").update(settingsText).digest("hex");
  assert.equal(
    podTemplate.metadata.annotations["checksum/config"],
    checksum,
    "deployment.yaml's checksum/config annotation must be the sha256 of deploy/oxy.yaml",
  );
  const volume = podTemplate.spec.volumes.find((v: any) => v.configMap?.name === configMap.metadata.name);
  assert.ok(volume, "a volume of the ConfigMap");
  const mount = container.volumeMounts.find((m: any) => m.name === volume.name);
  assert.deepEqual(container.args, ["--config", join(mount.mountPath, "oxy.yaml")]);
});

test("the settings' ports are the container's ports and the Service's targets", () => {
  const endpointPorts = settings.endpoints.flatMap((e: any) => {
    const transport = e.protocol === "udp" ? "UDP" : "TCP";
    const tcpOrUdp = e.listen.map((a: string) => `${transport}/${portOfAddress(a)}`);
    const h3 = e.http?.h3?.enabled ? (e.http.h3.listen?.length ? e.http.h3.listen : e.listen).map((a: string) => `UDP/${portOfAddress(a)}`) : [];
    return [...tcpOrUdp, ...h3];
  });
  const telemetryPort = `TCP/${portOfAddress(settings.telemetry.listen)}`;
  const containerPorts = container.ports.map((p: any) => `${p.protocol ?? "TCP"}/${p.containerPort}`);
  assert.deepEqual([...containerPorts].sort(), [...endpointPorts, telemetryPort].sort());
  const serviceTargets = service.spec.ports.map((p: any) => `${p.protocol ?? "TCP"}/${containerPort(p.targetPort ?? p.port)}`);
  assert.deepEqual([...serviceTargets].sort(), [...endpointPorts].sort(), "the Service publishes every endpoint, not telemetry");
  for (const endpoint of settings.endpoints) {
    assert.notEqual(endpoint.proxy_protocol?.mode ?? "off", "off", `endpoint ${endpoint.name} behind the load balancer reads PROXY headers`);
  }
});

test("the probes ask /health on the telemetry port", () => {
  const telemetryPort = portOfAddress(settings.telemetry.listen);
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    const httpGet = container[probe]?.httpGet;
    assert.ok(httpGet, `${probe} is an HTTP GET`);
    assert.equal(httpGet.path, "/health", probe);
    assert.equal(containerPort(httpGet.port), telemetryPort, probe);
  }
});

test("the grace period covers the preStop sleep and server.shutdown_timeout", () => {
  const shutdown = seconds(settings.server.shutdown_timeout);
  const preStop = container.lifecycle?.preStop?.sleep?.seconds ?? 0;
  assert.ok(preStop > 0, "preStop gives the load balancer time to stop sending");
  const grace = podTemplate.spec.terminationGracePeriodSeconds;
  assert.ok(grace > preStop + shutdown, `terminationGracePeriodSeconds ${grace} > preStop ${preStop} + shutdown_timeout ${shutdown}`);
});

test("the Service, the budget and the autoscaler point at the Deployment's pods", () => {
  const labels = podTemplate.metadata.labels;
  assert.ok(selects(deployment.spec.selector.matchLabels, labels), "Deployment selector");
  assert.ok(selects(service.spec.selector, labels), "Service selector");
  assert.ok(selects(only("PodDisruptionBudget").spec.selector.matchLabels, labels), "PodDisruptionBudget selector");
  const target = only("HorizontalPodAutoscaler").spec.scaleTargetRef;
  assert.deepEqual(target, { apiVersion: "apps/v1", kind: "Deployment", name: deployment.metadata.name });
  assert.equal(deployment.spec.replicas, undefined, "the autoscaler sets the replica count");
  assert.ok(container.resources.requests.cpu, "a CPU request for the autoscaler's utilisation");
});

test("the pod runs unprivileged, and writes only to stdout and stderr", () => {
  assert.equal(podTemplate.spec.securityContext.runAsNonRoot, true);
  const security = container.securityContext;
  assert.equal(security.readOnlyRootFilesystem, true);
  assert.equal(security.allowPrivilegeEscalation, false);
  assert.deepEqual(security.capabilities.drop, ["ALL"]);
  assert.equal(settings.security.seccomp, "enforce");
  // Files Oxy would write need a writable volume on a read-only root file system.
  const written = [settings.telemetry.audit?.path, settings.telemetry.address_file, settings.server.pid_file, settings.server.control_socket];
  for (const path of written.filter((p) => p)) {
    assert.ok(["/dev/stdout", "/dev/stderr"].includes(path), `${path} is not writable in the pod`);
  }
});

test("oxy --check-config accepts deploy/oxy.yaml and the ConfigMap's copy", async () => {
  for (const path of [settingsPath, writeConfig(mountedText)]) {
    const result = await runToExit("oxy", ["--check-config", "--config", path]);
    assert.equal(result.code, 0, `${path}:\n${result.stderr}`);
    assert.doesNotMatch(result.stderr, /warning/, "no open-proxy warning");
  }
});
