// The plugin entry as OpenClaw loads it: what register() hands the host, and
// the service, hook and provider working against real sidecars.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, test } from "node:test";

import plugin from "../index.js";
import { cliDescriptors } from "../lib/cli.js";
import { Supervisor } from "../lib/supervisor.js";
import { minimalConfig, recordingLogger, sidecarBinary, tempDir } from "./support.js";

const stateDir = tempDir();
process.env.OPENCLAW_STATE_DIR = stateDir;
delete process.env.CLAWMATRIX_PROXY_KEY;

/** A host api that keeps everything registered with it. */
function recordingApi(pluginConfig, registrationMode = "full") {
  const got = { tools: [], providers: [], hooks: {}, services: [], cli: [] };
  const api = {
    registrationMode,
    pluginConfig,
    config: {},
    logger: recordingLogger(),
    // A factory with its name, as OpenClaw takes it: a tool per run's context.
    registerTool: (factory, opts) => got.tools.push({ ...factory({ sessionKey: "agent:main:s1", agentId: "main" }), opts }),
    registerProvider: (p) => got.providers.push(p),
    registerService: (s) => got.services.push(s),
    on: (name, fn, opts) => {
      got.hooks[name] = fn;
      if (opts) got.hookOptions = { ...got.hookOptions, [name]: opts };
    },
    registerCli: (registrar, opts) => got.cli.push(opts),
  };
  return { api, got };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

test("register: a metadata-only load registers the CLI commands alone and makes no files", () => {
  const { api, got } = recordingApi(minimalConfig(), "cli-metadata");
  plugin.register(api);
  assert.deepEqual(got, { tools: [], providers: [], hooks: {}, services: [], cli: [{ descriptors: cliDescriptors() }] });
  assert.deepEqual(fs.readdirSync(stateDir), []);
});

test("register: a discovery load (how OpenClaw's CLI runs plugin commands) leaves the process environment alone", () => {
  const before = { ...process.env };
  const { api, got } = recordingApi(minimalConfig(), "discovery");
  plugin.register(api);
  assert.deepEqual({ ...process.env }, before, "OpenClaw refuses to run a plugin command when the environment changed during registration");
  assert.equal(got.cli.length, 1);
  assert.equal(got.providers.length, 1, "the provider is still registered, inert");
});

test("register: without a sidecar, a hook leaves the prompt alone and says why", async () => {
  const { api, got } = recordingApi(minimalConfig());
  process.env.CLAWMATRIX_BIN = path.join(tempDir(), "missing");
  plugin.register(api);
  assert.equal(await got.hooks.before_prompt_build({}, { agentId: "main" }), undefined);
  assert.ok(api.logger.lines.some((l) => l.level === "warn" && l.message.startsWith("clawmatrix: no cluster context for this prompt: CLAWMATRIX_BIN=")));
  await got.services[0].start({ stateDir });
  assert.ok(api.logger.lines.some((l) => l.level === "error" && l.message.startsWith("clawmatrix: service start failed: CLAWMATRIX_BIN=")));
  await got.services[0].stop();
});

test("register: tools, provider, hook and service, then the service runs the sidecar they use", async (t) => {
  process.env.CLAWMATRIX_BIN = sidecarBinary();
  // A second node, listening, for this one to reach: then the hook has a cluster to describe.
  const port = await freePort();
  const peerLogger = recordingLogger();
  const peerState = tempDir();
  const peer = new Supervisor({
    api: { pluginConfig: minimalConfig({ nodeId: "peer-node", listen: true, listenHost: "127.0.0.1", listenPort: port }), config: {}, logger: peerLogger },
    ctx: { stateDir: peerState, workspaceDir: peerState },
  });
  t.after(() => peer.stop());
  await peer.ensure();

  const { api, got } = recordingApi(minimalConfig({ peers: [{ url: `ws://127.0.0.1:${port}` }], proxyModels: [{ id: "far-model" }] }));
  plugin.register(api);
  const key = fs.readFileSync(path.join(stateDir, "clawmatrix", "proxy-key"), "utf8").trim();
  assert.equal(process.env.CLAWMATRIX_PROXY_KEY, key, "the key is where OpenClaw looks for the provider's credential");

  const names = ["cluster_peers", "cluster_exec", "cluster_read", "cluster_write", "cluster_tool", "cluster_handoff", "cluster_send", "cluster_tasks"];
  assert.deepEqual(got.tools.map((x) => x.name), names);
  assert.deepEqual(got.tools.map((x) => x.opts.name), names, "each factory is registered under its tool's name");
  assert.deepEqual(Object.keys(got.hooks).sort(), ["before_prompt_build", "before_tool_call"]);
  assert.deepEqual(got.hookOptions.before_tool_call, { matcher: got.tools.map((x) => x.name) }, "the approval hook sees the cluster tools only");
  assert.deepEqual(got.services.map((s) => s.id), ["clawmatrix"]);
  const [provider] = got.providers;
  assert.equal(provider.id, "clawmatrix");
  const before = (await provider.catalog.run()).provider;
  assert.equal(before.baseUrl, "http://127.0.0.1:0/v1", "before a start, the configured port");
  assert.equal(before.apiKey, key);
  assert.deepEqual(before.models.map((m) => m.id), ["far-model"]);

  const [service] = got.services;
  after(() => service.stop());
  await service.start({ stateDir, workspaceDir: path.join(stateDir, "ws") });
  const live = (await provider.catalog.run()).provider.baseUrl;
  assert.match(live, /^http:\/\/127\.0\.0\.1:[1-9]\d*\/v1$/, "after a start, the sidecar's own proxy URL");

  let context;
  for (const deadline = Date.now() + 20_000; !context && Date.now() < deadline; ) {
    context = await got.hooks.before_prompt_build({}, { agentId: "main", sessionKey: "s1" });
    if (!context) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.ok(context, "the peer became reachable within 20 s");
  assert.deepEqual(Object.keys(context), ["prependContext"]);
  assert.match(context.prependContext, /peer-node/);

  const r = await got.tools[0].execute("call-1", {});
  assert.deepEqual(r.details.peers.map((p) => p.nodeId), ["peer-node"]);

  await service.stop();
  assert.equal((await provider.catalog.run()).provider.baseUrl, "http://127.0.0.1:0/v1", "a stopped sidecar's URL is no longer offered");
  assert.equal(api.logger.lines.at(-1).message, "clawmatrix: sidecar stopped");
});
