// The README's example app: an ingress hook driven by per-endpoint app settings.

import assert from "node:assert/strict";
import { test } from "node:test";
import { OxyProcess, closed, openTcp, runToExit } from "../lib/oxy.ts";

test("each endpoint admits only its allowed networks", async () => {
  const oxy = await OxyProcess.start({
    binary: "client-allowlist",
    settings: {
      endpoints: [
        { name: "office", protocol: "tcp", listen: ["127.0.0.1:0"], app: { allow: ["10.0.0.0/8"] } },
        { name: "lab", protocol: "tcp", listen: ["127.0.0.1:0"], app: { allow: ["127.0.0.0/8", "::1/128"] } },
      ],
    },
  });
  const office = oxy.port("office");
  const lab = oxy.port("lab");
  await closed(await openTcp(office));
  await oxy.waitForMetric('client_allowlist_refused_total{endpoint="office"}', 1);
  await oxy.waitForMetric('oxy_connections_rejected_total{endpoint="office",reason="ingress_hook"}', 1);
  await oxy.waitForLog(/reason=127\.0\.0\.1 is not on the allowlist/);

  await closed(await openTcp(lab));
  await oxy.waitForMetric('oxy_connections_accepted_total{endpoint="lab"}', 1);
  assert.equal(await oxy.metric('client_allowlist_refused_total{endpoint="lab"}'), undefined);
  assert.equal(await oxy.metric('oxy_connections_rejected_total{endpoint="lab",reason="ingress_hook"}'), undefined);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("behind a load balancer the original client a PROXY header names is checked, not the balancer", async () => {
  const oxy = await OxyProcess.start({
    binary: "client-allowlist",
    settings: {
      endpoints: [
        {
          name: "behind_lb",
          protocol: "tcp",
          listen: ["127.0.0.1:0"],
          proxy_protocol: { mode: "required", trusted: ["127.0.0.0/8"] },
          app: { allow: ["10.0.0.0/8"] },
        },
      ],
    },
  });
  const port = oxy.port("behind_lb");
  // The balancer (127.0.0.1, not on the list) forwards a client from 10.1.2.3: admitted.
  const admitted = await openTcp(port);
  admitted.write("PROXY TCP4 10.1.2.3 127.0.0.1 40000 80\r\n");
  // Admitted, it is served (and closed: the endpoint has no target) without a refusal.
  await closed(admitted);
  await oxy.waitForLog(/endpoint=behind_lb.*client=10\.1\.2\.3/);
  assert.equal(await oxy.metric('client_allowlist_refused_total{endpoint="behind_lb"}'), undefined);
  // A client from 192.0.2.7 through the same balancer: refused, by its own address.
  const refused = await openTcp(port);
  refused.write("PROXY TCP4 192.0.2.7 127.0.0.1 40001 80\r\n");
  await closed(refused);
  await oxy.waitForMetric('client_allowlist_refused_total{endpoint="behind_lb"}', 1);
  await oxy.waitForLog(/reason=192\.0\.2\.7 is not on the allowlist/);
  assert.deepEqual(await oxy.stop(), { code: 0, signal: null });
});

test("its settings are documented in --generate-config and checked on load", async () => {
  const generated = await runToExit("client-allowlist", ["--generate-config"]);
  assert.equal(generated.code, 0);
  assert.match(generated.stdout, /# Networks whose clients may connect to this endpoint/);
  assert.match(generated.stdout, /^ {6}allow: \[\]$/m);

  const bad = await OxyProcess.start({
    binary: "client-allowlist",
    settings: { endpoints: [{ name: "x", protocol: "tcp", listen: ["127.0.0.1:0"], app: { allow: ["10.0.0.0/33"] } }] },
  }).catch((e: Error) => e);
  assert.ok(bad instanceof Error);
  assert.match(bad.message, /endpoints\[0\]\.app\.allow\[0\]: invalid IP address syntax/);
});
