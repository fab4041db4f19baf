// The model proxy's key: kept per state dir, and kept out of the sidecar's
// environment.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { loadProxyKey, sidecarEnv } from "../lib/proxy-key.js";
import { tempDir } from "./support.js";

test("proxy key: created once per state dir, private, then reused", () => {
  const state = tempDir();
  const key = loadProxyKey(state);
  assert.ok(key.length >= 32, key);
  assert.equal(loadProxyKey(state), key);
  assert.deepEqual(fs.readdirSync(state), ["clawmatrix"]);
  assert.deepEqual(fs.readdirSync(path.join(state, "clawmatrix")), ["proxy-key"]);
  assert.equal(fs.statSync(path.join(state, "clawmatrix", "proxy-key")).mode & 0o777, 0o600);
});

test("proxy key: a key already on disk is used as written, without surrounding space", () => {
  const state = tempDir();
  fs.mkdirSync(path.join(state, "clawmatrix"));
  fs.writeFileSync(path.join(state, "clawmatrix", "proxy-key"), "  written-by-hand\n");
  assert.equal(loadProxyKey(state), "written-by-hand");
});

test("sidecar environment: the proxy key is not in it, the rest is", () => {
  const env = { PATH: "/usr/bin", CLAWMATRIX_PROXY_KEY: "cmx-secret", OPENCLAW_STATE_DIR: "/s" };
  const got = sidecarEnv(env);
  assert.equal(got.CLAWMATRIX_PROXY_KEY, undefined);
  assert.equal(Object.values(got).includes("cmx-secret"), false);
  assert.deepEqual(got, { PATH: "/usr/bin", OPENCLAW_STATE_DIR: "/s" });
  assert.equal(env.CLAWMATRIX_PROXY_KEY, "cmx-secret", "the gateway's own environment is left alone");
});
