// The otel config the adapter takes from OpenClaw's diagnostics.otel.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { initializeParams } from "../lib/initialize.js";
import { otelFromDiagnostics } from "../lib/otel.js";
import { minimalConfig, sidecarBinary, tempDir } from "./support.js";

const SECRET_HEADER = "diag-header-secret-31f9";

function derive(diagnostics, env = {}) {
  const logged = [];
  const otel = otelFromDiagnostics({ diagnostics }, env, (level, message) => logged.push({ level, message }));
  return { otel, logged };
}

const on = (otel) => ({ enabled: true, otel: { enabled: true, ...otel } });

const cases = [
  ["the shared endpoint, sample rate and headers", on({ endpoint: "http://collector:4318", sampleRate: 0.2, headers: { "x-api-key": SECRET_HEADER } }), {},
    { endpoint: "http://collector:4318", sampleRatio: 0.2, headers: { "x-api-key": SECRET_HEADER } }],
  ["diagnostics.enabled defaults to on", { otel: { enabled: true, endpoint: "https://c.example:4318/" } }, {}, { endpoint: "https://c.example:4318" }],
  ["a shared endpoint ending in a signal path is its base", on({ endpoint: "http://c:4318/otlp/v1/metrics" }), {}, { endpoint: "http://c:4318/otlp" }],
  ["the traces endpoint wins and loses its path", on({ endpoint: "http://a:4318", tracesEndpoint: "http://t:4318/v1/traces" }), {}, { endpoint: "http://t:4318" }],
  ["the environment's traces endpoint", on({}), { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://env-t:4318/v1/traces", OTEL_EXPORTER_OTLP_ENDPOINT: "http://env:4318" },
    { endpoint: "http://env-t:4318" }],
  ["the environment's shared endpoint", on({}), { OTEL_EXPORTER_OTLP_ENDPOINT: "http://env:4318" }, { endpoint: "http://env:4318" }],
  ["a sample rate out of range is left out", on({ endpoint: "http://c:4318", sampleRate: 3 }), {}, { endpoint: "http://c:4318" }],
  ["otel export off", { enabled: true, otel: { enabled: false, endpoint: "http://c:4318" } }, {}, undefined],
  ["diagnostics off", { enabled: false, otel: { enabled: true, endpoint: "http://c:4318" } }, {}, undefined],
  ["traces off", on({ endpoint: "http://c:4318", traces: false }), {}, undefined],
  ["no endpoint anywhere", on({}), {}, undefined],
  ["the SDK disabled", on({ endpoint: "http://c:4318" }), { OTEL_SDK_DISABLED: "TRUE" }, undefined],
  ["no diagnostics", undefined, {}, undefined],
];

for (const [name, diagnostics, env, want] of cases) {
  test(`otel from diagnostics: ${name}`, () => {
    const { otel, logged } = derive(diagnostics, env);
    assert.deepEqual(otel, want);
    assert.deepEqual(logged, []);
  });
}

const refused = [
  ["gRPC", on({ endpoint: "http://c:4317", protocol: "grpc" }), {}, /protocol grpc/],
  ["gRPC from the environment", on({ endpoint: "http://c:4317" }), { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc" }, /protocol grpc/],
  ["a traces endpoint without the signal path", on({ tracesEndpoint: "http://t:4318/custom" }), {}, /does not end in \/v1\/traces/],
  ["credentials in the URL", on({ endpoint: "http://user:pw@c:4318" }), {}, /carries credentials/],
  ["not a URL", on({ endpoint: "collector:4318:x" }), {}, /not a URL|not http or https/],
  ["another scheme", on({ endpoint: "ftp://c:21" }), {}, /not http or https/],
];

for (const [name, diagnostics, env, why] of refused) {
  test(`otel from diagnostics: ${name} is not taken, with a warning`, () => {
    const { otel, logged } = derive(diagnostics, env);
    assert.equal(otel, undefined);
    assert.equal(logged.length, 1);
    assert.equal(logged[0].level, "warn");
    assert.match(logged[0].message, why);
    assert.doesNotMatch(logged[0].message, /pw@/);
  });
}

test("otel from diagnostics: a bad header is left out by name, its value never logged", () => {
  const { otel, logged } = derive(on({ endpoint: "http://c:4318", headers: { "bad name": SECRET_HEADER, "x-ok": "v", "x-two": `a\n${SECRET_HEADER}` } }));
  assert.deepEqual(otel, { endpoint: "http://c:4318", headers: { "x-ok": "v" } });
  assert.equal(logged.length, 2);
  for (const { message } of logged) assert.doesNotMatch(message, new RegExp(SECRET_HEADER));
});

test("initialize: otel comes from diagnostics.otel only when the plugin config has none", () => {
  const state = tempDir();
  const openclaw = { diagnostics: on({ endpoint: "http://127.0.0.1:4318", sampleRate: 0.5 }) };
  const params = initializeParams({ pluginConfig: { proxyKey: "k" }, config: openclaw }, { stateDir: state }, () => {});
  assert.deepEqual(params.config.otel, { endpoint: "http://127.0.0.1:4318", sampleRatio: 0.5 });
  const own = { endpoint: "http://mine:4318" };
  const kept = initializeParams({ pluginConfig: { proxyKey: "k", otel: own }, config: openclaw }, { stateDir: state }, () => {});
  assert.equal(kept.config.otel, own);
  const none = initializeParams({ pluginConfig: { proxyKey: "k" }, config: {} }, { stateDir: state }, () => {});
  assert.equal(none.config.otel, undefined);
});

// What the adapter hands the sidecar is a config the sidecar accepts.
test("otel from diagnostics: the sidecar validates what the adapter derives", () => {
  const dir = tempDir();
  for (const [name, diagnostics, env, want] of cases) {
    if (!want) continue;
    const file = path.join(dir, "config.json");
    fs.writeFileSync(file, JSON.stringify(minimalConfig({ otel: otelFromDiagnostics({ diagnostics }, env, () => {}) })));
    try {
      execFileSync(sidecarBinary(), ["validate-config", file], { encoding: "utf8" });
    } catch (err) {
      assert.fail(`${name}: the sidecar refuses the derived otel: ${err.stdout}`);
    }
  }
});
