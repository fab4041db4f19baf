// The bearer key of the local model proxy. OpenClaw gets it as the provider's
// credential (through CLAWMATRIX_PROXY_KEY and the catalog), the sidecar only
// in the initialize params, never in its environment, so nothing the sidecar
// starts can inherit it.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import { pluginStateDir } from "./dirs.js";

export const KEY_ENV = "CLAWMATRIX_PROXY_KEY";

/**
 * One key per state dir, shared by the gateway, its workers and CLI
 * processes, created once with mode 0600.
 */
export function loadProxyKey(stateDir) {
  const dir = pluginStateDir(stateDir);
  const file = path.join(dir, "proxy-key");
  try {
    const key = fs.readFileSync(file, "utf8").trim();
    if (key) return key;
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = crypto.randomBytes(32).toString("base64url");
  try {
    // O_EXCL: when two processes race, exactly one key wins and both use it.
    fs.writeFileSync(file, key + "\n", { mode: 0o600, flag: "wx" });
    return key;
  } catch (err) {
    if (err.code !== "EEXIST") throw err;
    return fs.readFileSync(file, "utf8").trim();
  }
}

/** The sidecar's environment: the gateway's, without the proxy key. */
export function sidecarEnv(env) {
  const out = { ...env };
  delete out[KEY_ENV];
  return out;
}
