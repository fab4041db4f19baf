// Tests of the OpenClaw adapter's own logic (run by `make check` with
// `node --test`): where it finds the binary and the workspace, the proxy key
// and the models and providers it hands OpenClaw and the sidecar.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";

import {
  clusterModels,
  loadProxyKey,
  proxyBaseUrl,
  resolveBinary,
  resolveWorkspaceDir,
  servingProviders,
  sidecarEnv,
} from "./index.js";

const made = [];
function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "clawmatrix-adapter-"));
  made.push(dir);
  return dir;
}
after(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

// Every test sees an empty home, so nothing installed on this machine is found.
process.env.HOME = tempDir();

test("workspace: the host's, then the config's, then OpenClaw's documented defaults", () => {
  const state = "/srv/state";
  const home = os.homedir();
  const cases = [
    ["host context", { workspaceDir: "/ws/ctx" }, {}, {}, "/ws/ctx"],
    ["config with ~", null, { agents: { defaults: { workspace: "~/work" } } }, {}, path.join(home, "work")],
    ["OPENCLAW_WORKSPACE_DIR", null, {}, { OPENCLAW_WORKSPACE_DIR: "/ws/env" }, "/ws/env"],
    ["profile", null, {}, { OPENCLAW_PROFILE: "dev" }, path.join(home, ".openclaw-dev", "workspace")],
    ["profile with a state dir", null, {}, { OPENCLAW_PROFILE: "dev", OPENCLAW_STATE_DIR: state }, path.join(state, "workspace")],
    ["default", null, {}, {}, path.join(state, "workspace")],
  ];
  for (const [name, ctx, config, env, want] of cases) {
    assert.equal(resolveWorkspaceDir({ config }, ctx, state, env), want, name);
  }
});

test("binary: CLAWMATRIX_BIN is used as it is, PATH is searched, a miss says what to run", () => {
  const dir = tempDir();
  const bin = path.join(dir, "clawmatrix-plugin");
  fs.writeFileSync(bin, "#!/bin/sh\n", { mode: 0o755 });
  assert.equal(resolveBinary({}, { PATH: `/nonexistent${path.delimiter}${dir}` }), bin);
  assert.equal(resolveBinary({}, { CLAWMATRIX_BIN: bin, PATH: "" }), bin);

  const notExec = path.join(dir, "not-executable");
  fs.writeFileSync(notExec, "x", { mode: 0o644 });
  assert.throws(() => resolveBinary({}, { CLAWMATRIX_BIN: notExec, PATH: dir }), /CLAWMATRIX_BIN=.*not-executable is not an executable file/);
  assert.throws(() => resolveBinary({}, { PATH: "/nonexistent" }), (err) => {
    assert.match(err.message, /clawmatrix-plugin binary not found/);
    assert.match(err.message, /make install/);
    assert.ok(err.message.includes(path.join(os.homedir(), ".local", "bin")), err.message);
    return true;
  });
});

test("proxy key: created once per state dir, private, then reused", () => {
  const state = tempDir();
  const key = loadProxyKey(state);
  assert.ok(key.length >= 32, key);
  assert.equal(loadProxyKey(state), key);
  assert.deepEqual(fs.readdirSync(state), ["clawmatrix"]);
  assert.deepEqual(fs.readdirSync(path.join(state, "clawmatrix")), ["proxy-key"]);
  assert.equal(fs.statSync(path.join(state, "clawmatrix", "proxy-key")).mode & 0o777, 0o600);
});

test("sidecar environment: the proxy key is not in it, the rest is", () => {
  const env = { PATH: "/usr/bin", CLAWMATRIX_PROXY_KEY: "cmx-secret", OPENCLAW_STATE_DIR: "/s" };
  const got = sidecarEnv(env);
  assert.equal(got.CLAWMATRIX_PROXY_KEY, undefined);
  assert.equal(Object.values(got).includes("cmx-secret"), false);
  assert.deepEqual(got, { PATH: "/usr/bin", OPENCLAW_STATE_DIR: "/s" });
  assert.equal(env.CLAWMATRIX_PROXY_KEY, "cmx-secret", "the gateway's own environment is left alone");
});

test("models: served then wanted, first id wins, defaults filled, always the proxy's API", () => {
  const got = clusterModels({
    models: [{ id: "m1", provider: "p", description: "Served here", maxTokens: 100, api: "anthropic-messages" }],
    proxyModels: [{ id: "m1", maxTokens: 999 }, { id: "m2", reasoning: true, input: ["text", "image"] }],
  });
  assert.deepEqual(got, [
    { id: "m1", name: "Served here", api: "openai-completions", reasoning: false, input: ["text"],
      cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 128000, maxTokens: 100 },
    { id: "m2", name: "m2", api: "openai-completions", reasoning: true, input: ["text", "image"],
      cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 128000, maxTokens: 4096 },
  ]);
  assert.deepEqual(clusterModels({}), []);
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
});

test("defaults in the adapter match the generated manifest and package", () => {
  const manifest = JSON.parse(fs.readFileSync(new URL("./openclaw.plugin.json", import.meta.url), "utf8"));
  const pkg = JSON.parse(fs.readFileSync(new URL("./package.json", import.meta.url), "utf8"));
  assert.equal(pkg.version, manifest.version, "package.json and openclaw.plugin.json versions");
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
