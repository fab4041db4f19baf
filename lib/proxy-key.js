// The bearer key of the local model proxy. OpenClaw gets it as the provider's
// credential (through CLAWMATRIX_PROXY_KEY and the catalog), the sidecar only
// in the initialize params, never in its environment, so nothing the sidecar
// starts can inherit it. The plugin's CLI commands read it to reach the
// running gateway's sidecar.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import { pluginStateDir } from "./dirs.js";

export const KEY_ENV = "CLAWMATRIX_PROXY_KEY";

/** The proxy key file of a state dir. */
export function proxyKeyFile(stateDir) {
  return path.join(pluginStateDir(stateDir), "proxy-key");
}

/**
 * The key in file, or null when there is none. A file that exists but holds
 * no key is an error, never a key: the gateway, its workers and the CLI
 * must agree on one key, and "" would be a different one for each.
 */
export function readProxyKey(file) {
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if (err.code === "ENOENT") return null;
    throw err;
  }
  const key = text.trim();
  if (!key) {
    throw new Error(
      `the proxy key file ${file} is empty; delete it and restart the gateway, which then makes a new key`,
    );
  }
  return key;
}

/**
 * One key per state dir, shared by the gateway, its workers and CLI
 * processes, created once with mode 0600.
 */
export function loadProxyKey(stateDir) {
  const file = proxyKeyFile(stateDir);
  const existing = readProxyKey(file);
  if (existing) return existing;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = crypto.randomBytes(32).toString("base64url");
  // Written whole to a temporary file, then linked into place: the key file
  // never exists without its key, and when two processes race, exactly one
  // key wins (link fails on an existing name) and both use it.
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString("hex")}`;
  fs.writeFileSync(tmp, key + "\n", { mode: 0o600, flag: "wx" });
  try {
    fs.linkSync(tmp, file);
    return key;
  } catch (err) {
    if (err.code !== "EEXIST") throw err;
    return readProxyKey(file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** The sidecar's environment: the gateway's, without the proxy key. */
export function sidecarEnv(env) {
  const out = { ...env };
  delete out[KEY_ENV];
  return out;
}
