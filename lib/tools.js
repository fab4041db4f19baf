// The cluster tools OpenClaw's agents call. Their list comes from
// openclaw.tools.json in the plugin folder, so registering them never needs
// the sidecar; each call is a tools/call request to it.

import fs from "node:fs";
import { fileURLToPath } from "node:url";

import { errorText } from "./errors.js";
import { isRpcError } from "./rpc.js";
import { supervisorFor } from "./supervisor.js";

const TOOL_TIMEOUT_SLACK_MS = 30_000;
const TOOL_TIMEOUT_DEFAULT_MS = 15 * 60_000;
// A handoff never holds a tool call longer than this: the sidecar runs one
// that would wait longer in the background (it hears the wait in timeoutMs).
const HANDOFF_WAIT_MAX_MS = 15 * 60_000;

/** The tool catalogue shipped beside lib/, generated from the Go types. */
export function readToolCatalogue(file = fileURLToPath(new URL("../openclaw.tools.json", import.meta.url))) {
  const tools = JSON.parse(fs.readFileSync(file, "utf8"));
  if (!Array.isArray(tools)) throw new Error(`${file}: expected an array of tools`);
  return tools;
}

/**
 * How an agent calls the plugin's tools under OpenClaw's tools.toolSearch
 * (docs: tools/tool-search.md in OpenClaw's package): "direct" when tool
 * search is off (the schemas are in the model's tool list); "code" for the
 * code mode (true, or an object without a mode, or mode "code"); else
 * "tool_call", the structured default, which keeps plugin tools out of the
 * list and reachable through tool_call (directory mode takes tool_call too).
 */
export function toolCallForm(openclawConfig) {
  const ts = openclawConfig?.tools?.toolSearch;
  if (ts === false) return "direct";
  if (ts === true) return "code";
  if (ts && typeof ts === "object") return ts.mode === "tools" || ts.mode === "directory" ? "tool_call" : "code";
  return "tool_call";
}

/** How long the adapter waits for tool `name` called with params. */
export function toolTimeout(name, params) {
  const t = Number(params?.timeoutMs);
  const wait = Number.isFinite(t) && t > 0 ? t + TOOL_TIMEOUT_SLACK_MS : TOOL_TIMEOUT_DEFAULT_MS;
  return name === "cluster_handoff" ? Math.min(wait, HANDOFF_WAIT_MAX_MS) : wait;
}

/**
 * The OpenClaw tool for catalogue entry t; a failed call is a tool result,
 * never a throw. toolContext is what OpenClaw hands a tool factory for the
 * run: its session, which a handoff that does not wait brings its result
 * back into.
 */
export function clusterTool(api, t, toolContext) {
  const session = typeof toolContext?.sessionKey === "string" && toolContext.sessionKey
    ? { key: toolContext.sessionKey, ...(toolContext.agentId ? { agentId: String(toolContext.agentId) } : {}) }
    : undefined;
  return {
    name: t.name,
    label: t.label,
    description: t.description,
    parameters: t.parameters,
    async execute(toolCallId, params, signal) {
      try {
        const timeoutMs = toolTimeout(t.name, params);
        const r = await supervisorFor(api).request(
          "tools/call",
          { name: t.name, arguments: params ?? {}, callId: toolCallId, timeoutMs, ...(session ? { session } : {}) },
          { timeoutMs, signal },
        );
        const details = { ...(r?.details && typeof r.details === "object" ? r.details : { value: r?.details }) };
        if (r?.isError) details.isError = true;
        return { content: Array.isArray(r?.content) ? r.content : [], details };
      } catch (err) {
        api.logger.error(`clawmatrix: ${t.name}: ${errorText(err)}`);
        // The sidecar answered with an error: it is running, so say what it said.
        const text = isRpcError(err)
          ? `${t.name} failed: ${err.message}`
          : `${t.name} failed: clawmatrix is unavailable on this node (${errorText(err)}). ` +
            `Tell the user; the gateway log has details.`;
        return { content: [{ type: "text", text }], details: { isError: true } };
      }
    },
  };
}
