// The cluster tools: the shipped catalogue, and each call through the real
// sidecar, including the ways a call fails.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { pathToFileURL } from "node:url";

import { currentSupervisor } from "../lib/supervisor.js";
import { clusterTool, readToolCatalogue, toolCallForm, toolTimeout } from "../lib/tools.js";
import { minimalConfig, recordingLogger, repoRoot, sidecarBinary, tempDir } from "./support.js";

process.env.OPENCLAW_STATE_DIR = tempDir();
after(() => currentSupervisor()?.stop());

const api = { pluginConfig: minimalConfig(), config: {}, logger: recordingLogger() };
const byName = (name) => readToolCatalogue().find((t) => t.name === name);

test("catalogue: the shipped openclaw.tools.json, as the sidecar lists its tools", () => {
  const tools = readToolCatalogue();
  const fromSidecar = JSON.parse(execFileSync(sidecarBinary(), ["tools"], { encoding: "utf8" }));
  assert.deepEqual(tools, fromSidecar);
  const tool = clusterTool(api, tools[0]);
  assert.deepEqual(
    { name: tool.name, label: tool.label, description: tool.description, parameters: tool.parameters },
    { name: tools[0].name, label: tools[0].label, description: tools[0].description, parameters: tools[0].parameters },
  );
});

test("catalogue: a file that is not a list is refused, naming the file", () => {
  const file = path.join(tempDir(), "tools.json");
  fs.writeFileSync(file, '{"name":"cluster_peers"}');
  assert.throws(() => readToolCatalogue(file), new RegExp(`^Error: ${file}: expected an array of tools$`));
});

test("call form: as OpenClaw's tools.toolSearch shows plugin tools to the model", () => {
  const cases = [
    [{}, "tool_call"], // unset: the structured default
    [{ tools: {} }, "tool_call"],
    [{ tools: { toolSearch: false } }, "direct"],
    [{ tools: { toolSearch: true } }, "code"],
    [{ tools: { toolSearch: { mode: "tools" } } }, "tool_call"],
    [{ tools: { toolSearch: { mode: "directory" } } }, "tool_call"],
    [{ tools: { toolSearch: { mode: "code", codeTimeoutMs: 5000 } } }, "code"],
    [{ tools: { toolSearch: { searchDefaultLimit: 5 } } }, "code"], // an object without a mode is code mode
    [undefined, "tool_call"],
  ];
  for (const [config, want] of cases) assert.equal(toolCallForm(config), want, JSON.stringify(config));
});

// Before the binary is found, so it runs first.
test("call: without a sidecar the agent is told clawmatrix is unavailable here", async () => {
  process.env.CLAWMATRIX_BIN = path.join(tempDir(), "missing");
  const r = await clusterTool(api, byName("cluster_peers")).execute("call-0", {});
  assert.equal(r.details.isError, true);
  assert.match(r.content[0].text, /^cluster_peers failed: clawmatrix is unavailable on this node \(CLAWMATRIX_BIN=.*missing is not an executable file; .*\)\. Tell the user; the gateway log has details\.$/);
  assert.ok(api.logger.lines.some((l) => l.level === "error" && l.message.startsWith("clawmatrix: cluster_peers: CLAWMATRIX_BIN=")));
});

test("call: a result's content and details reach the agent", async () => {
  process.env.CLAWMATRIX_BIN = sidecarBinary();
  const r = await clusterTool(api, byName("cluster_peers")).execute("call-1", undefined);
  assert.equal(r.content.length, 1);
  assert.equal(r.content[0].type, "text");
  assert.match(r.content[0].text, /adapter-test/);
  assert.deepEqual(r.details, { nodeId: "adapter-test", peers: [] });
});

test("call: a tool's own failure is marked isError, details wrapped when not an object", async () => {
  const r = await clusterTool(api, byName("cluster_exec")).execute("call-2", { node: "adapter-test" });
  assert.match(r.content[0].text, /^cluster_exec was not run: invalid arguments: .*command/);
  assert.deepEqual(r.details, { value: undefined, isError: true });
});

test("call: an error answer from the sidecar is passed on as it said it", async () => {
  const r = await clusterTool(api, { name: "cluster_nope", parameters: {} }).execute("call-3", {});
  assert.match(r.content[0].text, /^cluster_nope failed: tools\/call: unknown tool "cluster_nope"; .* \(code -32602\)$/);
  assert.deepEqual(r.details, { isError: true });
});

test("call: from another copy of the plugin (OpenClaw loads it several times), an error answer still reads as the sidecar's", async () => {
  // OpenClaw imports the entry from a copy of the plugin folder, as separate
  // module instances; the supervisor on globalThis comes from whichever
  // instance started it.
  const copy = path.join(tempDir(), "plugin");
  fs.cpSync(path.join(repoRoot, "lib"), path.join(copy, "lib"), { recursive: true });
  fs.copyFileSync(path.join(repoRoot, "openclaw.tools.json"), path.join(copy, "openclaw.tools.json"));
  const other = await import(pathToFileURL(path.join(copy, "lib", "tools.js")).href);
  assert.notEqual(other.clusterTool, clusterTool);
  assert.ok(currentSupervisor(), "the supervisor started by this instance is running");
  const r = await other.clusterTool(api, { name: "cluster_nope", parameters: {} }).execute("call-4", {});
  assert.match(r.content[0].text, /^cluster_nope failed: tools\/call: unknown tool "cluster_nope"; /);
  assert.doesNotMatch(r.content[0].text, /unavailable/);
});

test("wait: the adapter waits for a handoff at most 15 minutes, other tools as long as they ask", () => {
  assert.equal(toolTimeout("cluster_handoff", { timeoutMs: 60_000 }), 90_000);
  assert.equal(toolTimeout("cluster_handoff", { timeoutMs: 3_600_000 }), 15 * 60_000);
  assert.equal(toolTimeout("cluster_exec", { timeoutMs: 3_600_000 }), 3_630_000);
  assert.equal(toolTimeout("cluster_send", {}), 15 * 60_000);
});

test("call: the run's session and the adapter's wait go to the sidecar", async () => {
  process.env.CLAWMATRIX_BIN = sidecarBinary();
  // The sidecar's own agent takes the task, so no other node is needed.
  const local = { ...api, pluginConfig: minimalConfig({ agents: [{ id: "here" }], openclawBin: "/bin/false" }) };
  await currentSupervisor()?.stop();
  const session = { sessionKey: "agent:main:chat-9", agentId: "main" };
  const r = await clusterTool(local, byName("cluster_handoff"), session).execute("call-4", { agent: "here", task: "long", timeoutMs: 3_600_000 });
  assert.ok(!r.details.isError, r.content[0].text);
  assert.match(r.content[0].text, /would outlast this tool call's time limit \(15m0s\)/, "the sidecar heard the 15-minute wait");
  assert.match(r.content[0].text, /arrives in this conversation as a new message/, "the sidecar heard the session");
  const mine = await clusterTool(local, byName("cluster_tasks"), session).execute("call-5", {});
  assert.match(mine.content[0].text, new RegExp(r.details.id));
  const none = await clusterTool(local, byName("cluster_tasks")).execute("call-6", {});
  assert.doesNotMatch(none.content[0].text, new RegExp(r.details.id), "a call without the session does not see it");
});
