// The model proxy's key: kept per state dir, and kept out of the sidecar's
// environment.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { loadProxyKey, proxyKeyFile, readProxyKey, sidecarEnv } from "../lib/proxy-key.js";
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

test("proxy key: an empty key file is refused with what to do, never used as a key", () => {
  const state = tempDir();
  fs.mkdirSync(path.join(state, "clawmatrix"));
  const file = proxyKeyFile(state);
  for (const content of ["", "  \n"]) {
    fs.writeFileSync(file, content);
    assert.throws(() => loadProxyKey(state), (err) => {
      assert.equal(err.message, `the proxy key file ${file} is empty; delete it and restart the gateway, which then makes a new key`);
      return true;
    });
    assert.equal(fs.readFileSync(file, "utf8"), content, "the file is left for the operator to look at");
  }
  fs.rmSync(file);
  const key = loadProxyKey(state);
  assert.ok(key.length >= 32);
});

test("proxy key: reading never creates one; a missing file is null", () => {
  const state = tempDir();
  assert.equal(readProxyKey(proxyKeyFile(state)), null);
  assert.deepEqual(fs.readdirSync(state), []);
});

test("proxy key: processes racing for the first key all get the one that won, and no temporary file stays", async () => {
  const state = tempDir();
  const { spawn } = await import("node:child_process");
  const script = `import { loadProxyKey } from ${JSON.stringify(new URL("../lib/proxy-key.js", import.meta.url).href)};
process.stdout.write(loadProxyKey(${JSON.stringify(state)}));`;
  const runs = Array.from({ length: 6 }, () =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--input-type=module", "-e", script]);
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      child.on("error", reject);
      child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
    }),
  );
  const keys = await Promise.all(runs);
  assert.equal(new Set(keys).size, 1, `keys: ${keys}`);
  assert.equal(keys[0], fs.readFileSync(proxyKeyFile(state), "utf8").trim());
  assert.deepEqual(fs.readdirSync(path.join(state, "clawmatrix")), ["proxy-key"]);
});

test("sidecar environment: the proxy key is not in it, the rest is", () => {
  const env = { PATH: "/usr/bin", CLAWMATRIX_PROXY_KEY: "cmx-secret", OPENCLAW_STATE_DIR: "/s" };
  const got = sidecarEnv(env);
  assert.equal(got.CLAWMATRIX_PROXY_KEY, undefined);
  assert.equal(Object.values(got).includes("cmx-secret"), false);
  assert.deepEqual(got, { PATH: "/usr/bin", OPENCLAW_STATE_DIR: "/s" });
  assert.equal(env.CLAWMATRIX_PROXY_KEY, "cmx-secret", "the gateway's own environment is left alone");
});
