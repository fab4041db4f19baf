// The params of the initialize request (docs/HOST-PROTOCOL.md, initialize),
// gathered from what OpenClaw hands the plugin when the sidecar starts.

import fs from "node:fs";

import { servingProviders } from "./catalog.js";
import { resolveStateDir, resolveWorkspaceDir } from "./dirs.js";
import { errorText } from "./errors.js";
import { otelFromDiagnostics } from "./otel.js";
import { loadProxyKey } from "./proxy-key.js";

function gatewayInfo(openclawConfig) {
  const port = Number(process.env.OPENCLAW_GATEWAY_PORT) || Number(openclawConfig?.gateway?.port) || 18789;
  const token =
    typeof openclawConfig?.gateway?.auth?.token === "string"
      ? openclawConfig.gateway.auth.token
      : process.env.OPENCLAW_GATEWAY_TOKEN;
  const info = { port };
  if (token) info.token = token;
  return info;
}

function hostVersion(api) {
  try {
    if (api.runtime?.version) return api.runtime.version;
  } catch {
    // The runtime is unavailable in metadata-only loads.
  }
  return "unknown";
}

/**
 * Builds the initialize params for the host {api, ctx}, creating the
 * workspace if needed; log(level, message) reports a workspace that cannot
 * be made, which does not stop the start.
 */
export function initializeParams(api, ctx, log) {
  const stateDir = resolveStateDir(api, ctx);
  const pluginConfig = api.pluginConfig ?? {};
  const config = { ...pluginConfig };
  config.proxyKey ??= loadProxyKey(stateDir);
  if (config.otel === undefined) {
    const otel = otelFromDiagnostics(api.config, process.env, log);
    if (otel) config.otel = otel;
  }
  const params = {
    config,
    host: { name: "openclaw", version: hostVersion(api) },
    gateway: gatewayInfo(api.config),
    providers: servingProviders(pluginConfig, api.config),
    stateDir,
  };
  params.workspaceDir = resolveWorkspaceDir(api, ctx, stateDir);
  try {
    fs.mkdirSync(params.workspaceDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    log("warn", `cannot create the workspace ${params.workspaceDir}: ${errorText(err)}`);
  }
  return params;
}
