// Approvals before remote actions: OpenClaw's before_tool_call hook asks the
// sidecar whether a cluster tool call waits for the user (approvals in the
// plugin config) and, if so, hands OpenClaw the prompt to show
// (docs/HOST-PROTOCOL.md, hooks/beforeToolCall). The decision itself is
// OpenClaw's plugin approval flow: allowed once, the call runs; denied or
// unanswered, it does not and the agent is told so.

import { errorText } from "./errors.js";
import { supervisorFor } from "./supervisor.js";

const APPROVAL_HOOK_TIMEOUT_MS = 5_000;

/** The before_tool_call handler for the cluster tools. */
export function approvalHook(api) {
  return async (event, ctx) => {
    const tool = event?.toolName;
    // From the config as OpenClaw holds it: used only when the sidecar
    // cannot answer, to fail closed for a call that would have waited.
    const gated = (api.pluginConfig?.approvals?.tools ?? []).includes(tool);
    try {
      const r = await supervisorFor(api).request(
        "hooks/beforeToolCall",
        { toolName: tool, params: event?.params ?? {}, agentId: ctx?.agentId, sessionKey: ctx?.sessionKey },
        { timeoutMs: APPROVAL_HOOK_TIMEOUT_MS, signal: ctx?.abortSignal },
      );
      return r?.requireApproval ? { requireApproval: { ...r.requireApproval } } : undefined;
    } catch (err) {
      if (!gated) return undefined;
      api.logger.warn(`clawmatrix: ${tool} needs approval but no prompt could be made: ${errorText(err)}`);
      return {
        block: true,
        blockReason:
          `${tool} did not run: the clawmatrix config asks the user to approve it, and clawmatrix could not ` +
          `prepare the approval prompt (${errorText(err)}). Tell the user; the gateway log has details.`,
      };
    }
  };
}
