// OpenClaw host adapter for clawmatrix: the plugin entry, which only
// registers the cluster's tools, model provider, prompt hook and service.
//
// All cluster logic lives in the Go sidecar `clawmatrix-plugin`, which the
// adapter starts once per gateway process and drives over NDJSON JSON-RPC 2.0
// on its stdin/stdout (docs/HOST-PROTOCOL.md). The adapter's parts are in lib/:
// rpc.js (the JSON-RPC client), supervisor.js (the sidecar process),
// binary.js (finding it), catalog.js (the provider and its models), tools.js,
// cli.js (the openclaw clawmatrix commands), approvals.js (approval prompts
// before remote actions), initialize.js, dirs.js and proxy-key.js.
//
// Facts about OpenClaw that shape this file:
// - OpenClaw imports this entry several times as separate module instances,
//   from a copy of the plugin folder, so the one sidecar handle lives on
//   globalThis (lib/supervisor.js), never in a module variable.
// - Registration must stay cheap and side-effect free (it also runs inside CLI
//   processes): no process is spawned until the service starts or a tool or
//   hook needs the sidecar.
// Node built-ins only: the package depends on nothing but the platform
// packages that carry the sidecar binary (lib/binary.js).

import { approvalHook } from "./lib/approvals.js";
import { clusterProvider } from "./lib/catalog.js";
import { registerClusterCli } from "./lib/cli.js";
import { resolveStateDir } from "./lib/dirs.js";
import { errorText } from "./lib/errors.js";
import { PLUGIN_ID } from "./lib/ids.js";
import { KEY_ENV, loadProxyKey } from "./lib/proxy-key.js";
import { currentSupervisor, supervisorFor } from "./lib/supervisor.js";
import { clusterTool, readToolCatalogue, toolCallForm } from "./lib/tools.js";

const HOOK_TIMEOUT_MS = 5_000;

function registerTools(api) {
  let tools;
  try {
    tools = readToolCatalogue();
  } catch (err) {
    api.logger.error(`clawmatrix: cannot read the tool catalogue, no cluster tools registered: ${errorText(err)}`);
    return;
  }
  // A factory per tool: OpenClaw calls it for each run with the run's
  // context (its session), and the name lets it list the tool without one.
  for (const t of tools) api.registerTool((toolContext) => clusterTool(api, t, toolContext), { name: t.name });
  // Approvals (the config's approvals) ask before the cluster tools act.
  api.on("before_tool_call", approvalHook(api), { matcher: tools.map((t) => t.name) });
}

function registerHook(api) {
  api.on("before_prompt_build", async (_event, ctx) => {
    try {
      const r = await supervisorFor(api).request(
        "hooks/beforePromptBuild",
        { agentId: ctx?.agentId, sessionKey: ctx?.sessionKey, toolCallForm: toolCallForm(api.config) },
        { timeoutMs: HOOK_TIMEOUT_MS },
      );
      return r?.prependContext ? { prependContext: r.prependContext } : undefined;
    } catch (err) {
      // Never block a turn on the cluster.
      api.logger.warn(`clawmatrix: no cluster context for this prompt: ${errorText(err)}`);
      return undefined;
    }
  });
}

function registerService(api) {
  api.registerService({
    id: PLUGIN_ID,
    async start(ctx) {
      try {
        await supervisorFor(api, ctx).ensure();
      } catch (err) {
        api.logger.error(`clawmatrix: service start failed: ${errorText(err)}`);
      }
    },
    async stop() {
      await currentSupervisor()?.stop();
    },
  });
}

export default {
  id: PLUGIN_ID,
  name: "clawmatrix",
  description: "Joins OpenClaw gateways into one cluster: remote models, tools and agents.",
  register(api) {
    // In every mode: OpenClaw collects CLI metadata in "cli-metadata" loads
    // and runs the commands from a "discovery" load of a CLI process.
    registerClusterCli(api);
    if (api.registrationMode === "cli-metadata") return;
    let key = api.pluginConfig?.proxyKey;
    if (!key) {
      try {
        key = loadProxyKey(resolveStateDir(api));
      } catch (err) {
        api.logger.error(`clawmatrix: no proxy key, so no clawmatrix models: ${errorText(err)}`);
      }
    }
    // Without a credential present OpenClaw never runs the provider catalog.
    // Not in a discovery load: OpenClaw's CLI loads plugins that way to run
    // their commands, checks that the process environment did not change
    // meanwhile, and refuses to run the command if it did.
    if (key && api.registrationMode !== "discovery") process.env[KEY_ENV] ??= key;
    if (key) {
      const liveUrl = () => currentSupervisor()?.initResult?.provider?.baseUrl;
      api.registerProvider(clusterProvider(api.pluginConfig ?? {}, key, liveUrl));
    }
    registerTools(api);
    registerHook(api);
    registerService(api);
  },
};
