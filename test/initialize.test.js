// The initialize params the sidecar is started with.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { initializeParams } from "../lib/initialize.js";
import { loadProxyKey } from "../lib/proxy-key.js";
import { tempDir } from "./support.js";

for (const name of ["OPENCLAW_GATEWAY_PORT", "OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_STATE_DIR", "OPENCLAW_WORKSPACE_DIR", "OPENCLAW_PROFILE"]) {
  delete process.env[name];
}

function collect() {
  const logged = [];
  return { logged, log: (level, message) => logged.push({ level, message }) };
}

test("initialize: the plugin config with the state dir's proxy key, the gateway, the serving providers, the workspace made", () => {
  const state = tempDir();
  const api = {
    pluginConfig: { nodeId: "n1", models: [{ id: "m", provider: "local" }] },
    config: {
      gateway: { port: 18800, auth: { token: "gw-token" } },
      models: { providers: { local: { baseUrl: "http://127.0.0.1:8000/v1" } } },
    },
    runtime: { version: "2026.9.6" },
  };
  const { logged, log } = collect();
  const params = initializeParams(api, { stateDir: state }, log);
  assert.deepEqual(params, {
    config: { nodeId: "n1", models: [{ id: "m", provider: "local" }], proxyKey: loadProxyKey(state) },
    host: { name: "openclaw", version: "2026.9.6" },
    gateway: { port: 18800, token: "gw-token" },
    providers: { local: { baseUrl: "http://127.0.0.1:8000/v1", api: "openai-completions" } },
    stateDir: state,
    workspaceDir: path.join(state, "workspace"),
  });
  assert.equal(api.pluginConfig.proxyKey, undefined, "the host's config object is not changed");
  assert.ok(fs.statSync(params.workspaceDir).isDirectory());
  assert.deepEqual(logged, []);
});

test("initialize: a configured proxy key wins; the gateway's environment fills what the config lacks", (t) => {
  t.after(() => {
    delete process.env.OPENCLAW_GATEWAY_PORT;
    delete process.env.OPENCLAW_GATEWAY_TOKEN;
  });
  process.env.OPENCLAW_GATEWAY_PORT = "18999";
  process.env.OPENCLAW_GATEWAY_TOKEN = "env-token";
  const state = tempDir();
  const params = initializeParams({ pluginConfig: { proxyKey: "mine" } }, { stateDir: state }, collect().log);
  assert.equal(params.config.proxyKey, "mine");
  assert.equal(fs.existsSync(path.join(state, "clawmatrix", "proxy-key")), false, "no key file is made when one is configured");
  assert.deepEqual(params.gateway, { port: 18999, token: "env-token" });
  assert.deepEqual(params.host, { name: "openclaw", version: "unknown" });

  delete process.env.OPENCLAW_GATEWAY_PORT;
  delete process.env.OPENCLAW_GATEWAY_TOKEN;
  assert.deepEqual(initializeParams({ pluginConfig: { proxyKey: "k" } }, { stateDir: state }, collect().log).gateway, { port: 18789 });
});

test("initialize: a workspace that cannot be made is logged, and the params still go out", () => {
  const state = tempDir();
  const blocker = path.join(state, "file");
  fs.writeFileSync(blocker, "");
  const { logged, log } = collect();
  const params = initializeParams({ pluginConfig: { proxyKey: "k" } }, { stateDir: state, workspaceDir: path.join(blocker, "ws") }, log);
  assert.equal(params.workspaceDir, path.join(blocker, "ws"));
  assert.equal(logged.length, 1);
  assert.equal(logged[0].level, "warn");
  assert.match(logged[0].message, /cannot create the workspace .*file\/ws: /);
});
