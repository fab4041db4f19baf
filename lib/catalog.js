// The clawmatrix model provider as OpenClaw sees it, and the OpenClaw
// providers this node serves models from. OpenClaw builds its model catalog
// without waiting for the sidecar (and in CLI processes that never start
// one), so everything here comes from the plugin config alone.

import { PROVIDER_ID } from "./ids.js";
import { KEY_ENV } from "./proxy-key.js";

// Config defaults (README.md, Configuration; the same values as the Default*
// constants in schema/config.go).
const DEFAULT_PROXY_PORT = 19001;
const MODEL_DEFAULTS = Object.freeze({
  api: "openai-completions",
  contextWindow: 128000,
  maxTokens: 4096,
  reasoning: false,
  input: ["text"],
  cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
});

/** models ∪ proxyModels by id (first wins), config defaults filled. */
export function clusterModels(pluginConfig) {
  const seen = new Set();
  const out = [];
  const all = [...(pluginConfig?.models ?? []), ...(pluginConfig?.proxyModels ?? [])];
  for (const m of all) {
    if (!m || typeof m.id !== "string" || seen.has(m.id)) continue;
    seen.add(m.id);
    out.push(modelEntry(m.id, m));
  }
  return out;
}

function modelEntry(id, m = {}) {
  return {
    id,
    name: m.description || id,
    // The local proxy speaks OpenAI chat completions, whatever the serving
    // node's upstream speaks.
    api: MODEL_DEFAULTS.api,
    reasoning: m.reasoning ?? MODEL_DEFAULTS.reasoning,
    input: m.input ?? [...MODEL_DEFAULTS.input],
    cost: { ...MODEL_DEFAULTS.cost, ...(m.cost ?? {}) },
    contextWindow: m.contextWindow ?? MODEL_DEFAULTS.contextWindow,
    maxTokens: m.maxTokens ?? MODEL_DEFAULTS.maxTokens,
  };
}

export function proxyBaseUrl(pluginConfig) {
  return `http://127.0.0.1:${pluginConfig?.proxyPort ?? DEFAULT_PROXY_PORT}/v1`;
}

/**
 * The provider handed to api.registerProvider. liveUrl returns the running
 * sidecar's proxy URL, if there is one in this process.
 */
export function clusterProvider(pluginConfig, key, liveUrl) {
  // With proxyPort 0 only the running sidecar knows its port: prefer the URL
  // it reported. Processes without a sidecar (the CLI) use the configured one,
  // so README asks for a fixed proxyPort under OpenClaw.
  const configuredUrl = proxyBaseUrl(pluginConfig);
  const known = () => clusterModels(pluginConfig);
  return {
    id: PROVIDER_ID,
    label: "clawmatrix cluster",
    envVars: [KEY_ENV],
    auth: [],
    catalog: {
      order: "simple",
      // Never starts a sidecar: the catalog also runs in CLI processes, where
      // a second sidecar would join the mesh under this node's id.
      run: async () => ({
        provider: { baseUrl: liveUrl() ?? configuredUrl, api: "openai-completions", apiKey: key, models: known() },
      }),
    },
    // The cluster is dynamic: a model served by any node is reachable even if
    // this node's config does not list it; the proxy answers 404 otherwise.
    resolveDynamicModel: (ctx) => {
      const m = known().find((x) => x.id === ctx.modelId) ?? modelEntry(ctx.modelId);
      return { ...m, provider: PROVIDER_ID, baseUrl: liveUrl() ?? configuredUrl };
    },
  };
}

/** OpenClaw providers named by this node's served models, OpenAI-compatible only. */
export function servingProviders(pluginConfig, openclawConfig) {
  const configured = openclawConfig?.models?.providers ?? {};
  const out = {};
  for (const m of pluginConfig?.models ?? []) {
    const id = m?.provider;
    if (typeof id !== "string" || out[id] || !Object.hasOwn(configured, id)) continue;
    const p = configured[id];
    const api = p?.api ?? "openai-completions";
    if (typeof p?.baseUrl !== "string" || api !== "openai-completions") continue;
    const entry = { baseUrl: p.baseUrl, api };
    // A SecretRef object cannot be resolved here; the sidecar then sends no key.
    if (typeof p.apiKey === "string" && p.apiKey) entry.apiKey = p.apiKey;
    out[id] = entry;
  }
  return out;
}
