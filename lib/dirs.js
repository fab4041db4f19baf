// The folders the adapter and the sidecar work in: OpenClaw's state dir (the
// sidecar's working directory, with the plugin's own files in a subfolder)
// and the workspace remote commands start in.

import os from "node:os";
import path from "node:path";

import { PLUGIN_ID } from "./ids.js";

export function resolveStateDir(api, ctx) {
  if (ctx?.stateDir) return ctx.stateDir;
  if (process.env.OPENCLAW_STATE_DIR) return process.env.OPENCLAW_STATE_DIR;
  try {
    const dir = api.runtime?.state?.resolveStateDir?.();
    if (dir) return dir;
  } catch {
    // The runtime is unavailable in metadata-only loads; fall through.
  }
  return path.join(os.homedir(), ".openclaw");
}

/** The plugin's folder in the state dir: proxy key, sidecar log, node key. */
export function pluginStateDir(stateDir) {
  return path.join(stateDir, PLUGIN_ID);
}

function expandHome(p) {
  return p === "~" || p.startsWith("~/") ? path.join(os.homedir(), p.slice(1)) : p;
}

/**
 * The workspace remote commands and relative paths start in: OpenClaw's own
 * default-agent workspace, resolved the way OpenClaw documents it, so remote
 * tools never start in the state dir (which holds the gateway token).
 */
export function resolveWorkspaceDir(api, ctx, stateDir, env = process.env) {
  if (ctx?.workspaceDir) return ctx.workspaceDir;
  const configured = api?.config?.agents?.defaults?.workspace;
  if (typeof configured === "string" && configured) return path.resolve(expandHome(configured));
  if (env.OPENCLAW_WORKSPACE_DIR) return path.resolve(env.OPENCLAW_WORKSPACE_DIR);
  const profile = env.OPENCLAW_PROFILE;
  if (!env.OPENCLAW_STATE_DIR && profile && profile !== "default") {
    return path.join(os.homedir(), `.openclaw-${profile}`, "workspace");
  }
  return path.join(stateDir, "workspace");
}
