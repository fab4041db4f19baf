// The before_tool_call hook: approval prompts from the real sidecar for the
// calls the config's approvals name, and a block when no prompt can be made.
import assert from "node:assert/strict";
import path from "node:path";
import { after, test } from "node:test";

import { approvalHook } from "../lib/approvals.js";
import { currentSupervisor } from "../lib/supervisor.js";
import { minimalConfig, recordingLogger, sidecarBinary, tempDir } from "./support.js";

process.env.OPENCLAW_STATE_DIR = tempDir();
after(() => currentSupervisor()?.stop());

const api = {
  pluginConfig: minimalConfig({ approvals: { tools: ["cluster_exec", "cluster_write"], timeoutMs: 30000 } }),
  config: {},
  logger: recordingLogger(),
};

// Before the binary is found, so it runs first.
test("approvals: when no prompt can be made, a gated call is blocked and an ungated one left alone", async () => {
  process.env.CLAWMATRIX_BIN = path.join(tempDir(), "missing");
  const hook = approvalHook(api);
  const r = await hook({ toolName: "cluster_exec", params: { node: "b", command: "rm -rf /tmp/x" } }, { agentId: "main" });
  assert.equal(r.block, true);
  assert.match(r.blockReason, /^cluster_exec did not run: the clawmatrix config asks the user to approve it, and clawmatrix could not prepare the approval prompt \(CLAWMATRIX_BIN=/);
  assert.equal(await hook({ toolName: "cluster_read", params: { node: "b", path: "x" } }, {}), undefined);
  assert.ok(api.logger.lines.some((l) => l.level === "warn" && l.message.startsWith("clawmatrix: cluster_exec needs approval but no prompt could be made")));
});

test("approvals: a gated call gets the sidecar's prompt, offering allow-once and deny", async () => {
  process.env.CLAWMATRIX_BIN = sidecarBinary();
  const hook = approvalHook(api);
  const r = await hook({ toolName: "cluster_write", params: { node: "b", path: "notes.md", content: "private" } }, { agentId: "main", sessionKey: "s" });
  assert.deepEqual(r, {
    requireApproval: {
      title: "Write a file on node b",
      description: 'cluster_write wants to replace "notes.md" on node b with 7 bytes (the content is not shown here)',
      severity: "warning",
      allowedDecisions: ["allow-once", "deny"],
      timeoutMs: 30000,
      timeoutReason: 'The user did not approve cluster_write on node b within 30 s, so it did not run. Do not call it again unless the user asks for it.',
    },
  });
  assert.equal(await hook({ toolName: "cluster_peers", params: {} }, {}), undefined, "a tool the config does not name runs");
});
