// The cluster tools OpenClaw's agents call. Their list comes from
// openclaw.tools.json in the plugin folder, so registering them never needs
// the sidecar; each call is a tools/call request to it.

import fs from "node:fs";
import { fileURLToPath } from "node:url";

import { errorText } from "./errors.js";
import { RpcError } from "./rpc.js";
import { supervisorFor } from "./supervisor.js";

const TOOL_TIMEOUT_SLACK_MS = 30_000;
const TOOL_TIMEOUT_DEFAULT_MS = 15 * 60_000;

/** The tool catalogue shipped beside lib/, generated from the Go types. */
export function readToolCatalogue(file = fileURLToPath(new URL("../openclaw.tools.json", import.meta.url))) {
  const tools = JSON.parse(fs.readFileSync(file, "utf8"));
  if (!Array.isArray(tools)) throw new Error(`${file}: expected an array of tools`);
  return tools;
}

function toolTimeout(params) {
  const t = Number(params?.timeoutMs);
  return Number.isFinite(t) && t > 0 ? t + TOOL_TIMEOUT_SLACK_MS : TOOL_TIMEOUT_DEFAULT_MS;
}

/** The OpenClaw tool for catalogue entry t; a failed call is a tool result, never a throw. */
export function clusterTool(api, t) {
  return {
    name: t.name,
    label: t.label,
    description: t.description,
    parameters: t.parameters,
    async execute(toolCallId, params, signal) {
      try {
        const r = await supervisorFor(api).request(
          "tools/call",
          { name: t.name, arguments: params ?? {}, callId: toolCallId },
          { timeoutMs: toolTimeout(params), signal },
        );
        const details = { ...(r?.details && typeof r.details === "object" ? r.details : { value: r?.details }) };
        if (r?.isError) details.isError = true;
        return { content: Array.isArray(r?.content) ? r.content : [], details };
      } catch (err) {
        api.logger.error(`clawmatrix: ${t.name}: ${errorText(err)}`);
        // The sidecar answered with an error: it is running, so say what it said.
        const text = err instanceof RpcError
          ? `${t.name} failed: ${err.message}`
          : `${t.name} failed: clawmatrix is unavailable on this node (${errorText(err)}). ` +
            `Tell the user; the gateway log has details.`;
        return { content: [{ type: "text", text }], details: { isError: true } };
      }
    },
  };
}
