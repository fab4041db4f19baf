// The clawmatrix provider and its models as OpenClaw sees them, and the
// OpenClaw providers handed to the sidecar.
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";

import { clusterModels, clusterProvider, proxyBaseUrl, servingProviders } from "../lib/catalog.js";

const FREE = { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 };

test("models: served then wanted, first id wins, defaults filled, always the proxy's API", () => {
  const got = clusterModels({
    models: [{ id: "m1", provider: "p", description: "Served here", maxTokens: 100, api: "anthropic-messages" }],
    proxyModels: [{ id: "m1", maxTokens: 999 }, { id: "m2", reasoning: true, input: ["text", "image"] }],
  });
  assert.deepEqual(got, [
    { id: "m1", name: "Served here", api: "openai-completions", reasoning: false, input: ["text"],
      cost: FREE, contextWindow: 128000, maxTokens: 100 },
    { id: "m2", name: "m2", api: "openai-completions", reasoning: true, input: ["text", "image"],
      cost: FREE, contextWindow: 128000, maxTokens: 4096 },
  ]);
  assert.deepEqual(clusterModels({}), []);
  assert.deepEqual(clusterModels({ proxyModels: [null, { id: 7 }, { description: "no id" }] }), [], "entries without a string id are skipped");
});

test("providers: only those this node's models name, OpenAI-compatible, with a plain-string key", () => {
  const openclaw = {
    models: {
      providers: {
        local: { baseUrl: "http://127.0.0.1:8000/v1", api: "openai-completions", apiKey: "k" },
        noapi: { baseUrl: "http://127.0.0.1:8001/v1" },
        ref: { baseUrl: "http://127.0.0.1:8002/v1", apiKey: { source: "env", id: "X" } },
        claude: { baseUrl: "https://example.invalid", api: "anthropic-messages", apiKey: "k" },
        unused: { baseUrl: "http://127.0.0.1:8003/v1" },
      },
    },
  };
  const plugin = { models: ["local", "noapi", "ref", "claude", "missing", "local"].map((provider, i) => ({ id: `m${i}`, provider })) };
  assert.deepEqual(servingProviders(plugin, openclaw), {
    local: { baseUrl: "http://127.0.0.1:8000/v1", api: "openai-completions", apiKey: "k" },
    noapi: { baseUrl: "http://127.0.0.1:8001/v1", api: "openai-completions" },
    ref: { baseUrl: "http://127.0.0.1:8002/v1", api: "openai-completions" },
  });
  assert.deepEqual(servingProviders({ models: [{ id: "m", provider: "toString" }] }, {}), {}, "no inherited property is taken for a provider");
});

test("provider: the running sidecar's URL when there is one, else the configured port", async () => {
  let live;
  const provider = clusterProvider({ proxyPort: 4100, proxyModels: [{ id: "qwen", description: "Qwen" }] }, "k-1", () => live);
  assert.equal(provider.id, "clawmatrix");
  assert.deepEqual(provider.envVars, ["CLAWMATRIX_PROXY_KEY"]);

  const { provider: listed } = await provider.catalog.run();
  assert.equal(listed.baseUrl, "http://127.0.0.1:4100/v1");
  assert.equal(listed.apiKey, "k-1");
  assert.deepEqual(listed.models.map((m) => m.id), ["qwen"]);

  live = "http://127.0.0.1:51234/v1";
  assert.equal((await provider.catalog.run()).provider.baseUrl, live);
  const known = provider.resolveDynamicModel({ modelId: "qwen" });
  assert.equal(known.name, "Qwen");
  assert.equal(known.baseUrl, live);
  assert.equal(known.provider, "clawmatrix");
});

test("provider: a model no config lists still resolves, with the defaults, for the cluster to serve or refuse", () => {
  const provider = clusterProvider({}, "k", () => undefined);
  assert.deepEqual(provider.resolveDynamicModel({ modelId: "elsewhere" }), {
    id: "elsewhere", name: "elsewhere", api: "openai-completions", reasoning: false, input: ["text"],
    cost: FREE, contextWindow: 128000, maxTokens: 4096,
    provider: "clawmatrix", baseUrl: "http://127.0.0.1:19001/v1",
  });
});

test("defaults in the adapter match the generated manifest and package", () => {
  const manifest = JSON.parse(fs.readFileSync(new URL("../openclaw.plugin.json", import.meta.url), "utf8"));
  const pkg = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  // The version is written down once, in package.json: the manifest has none,
  // and the platform packages are pinned to it.
  assert.equal(manifest.version, undefined, "openclaw.plugin.json carries no version");
  for (const [name, v] of Object.entries(pkg.optionalDependencies)) assert.equal(v, pkg.version, name);
  const props = manifest.configSchema.properties;
  const params = props.proxyModels.items.properties;
  const [m] = clusterModels({ proxyModels: [{ id: "x" }] });
  assert.equal(m.contextWindow, params.contextWindow.default);
  assert.equal(m.maxTokens, params.maxTokens.default);
  assert.equal(m.reasoning, params.reasoning.default);
  assert.deepEqual(m.input, params.input.default);
  for (const k of ["input", "output", "cacheRead", "cacheWrite"]) {
    assert.equal(m.cost[k], params.cost.properties[k].default, `cost.${k}`);
  }
  assert.equal(m.api, params.api.default);
  assert.equal(proxyBaseUrl({}), `http://127.0.0.1:${props.proxyPort.default}/v1`);
  assert.equal(proxyBaseUrl({ proxyPort: 4000 }), "http://127.0.0.1:4000/v1");
});
