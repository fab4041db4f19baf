// The sidecar's lifecycle, with the real sidecar binary built from this
// checkout: start, log file, restart after a crash, a fatal config, stop.
import assert from "node:assert/strict";
import { once } from "node:events";
import fs from "node:fs";
import path from "node:path";
import { before, test } from "node:test";

import { currentSupervisor, Supervisor, supervisorFor } from "../lib/supervisor.js";
import { minimalConfig, recordingLogger, sidecarBinary, tempDir } from "./support.js";

before(() => {
  process.env.CLAWMATRIX_BIN = sidecarBinary();
});

function host(config = minimalConfig()) {
  const logger = recordingLogger();
  const stateDir = tempDir();
  return { api: { pluginConfig: config, config: {}, logger }, ctx: { stateDir, workspaceDir: path.join(stateDir, "ws") }, logger };
}

function messages(logger, level) {
  return logger.lines.filter((l) => !level || l.level === level).map((l) => l.message);
}

test("supervisor: starts the sidecar once, serves requests, logs to the state dir, stops it gracefully", async (t) => {
  const { api, ctx, logger } = host();
  const sup = new Supervisor({ api, ctx });
  t.after(() => sup.stop());
  const [a, b] = await Promise.all([sup.ensure(), sup.ensure()]);
  assert.equal(a, b, "concurrent callers share one start");
  assert.equal(a.nodeId, "adapter-test");
  const child = sup.child;
  assert.ok(child.pid > 0);
  assert.deepEqual(await sup.request("cluster/status", {}), { nodeId: "adapter-test", peers: [] });
  assert.ok(fs.statSync(ctx.workspaceDir).isDirectory(), "the workspace is made before the start");
  assert.ok(messages(logger, "info").some((m) => /^clawmatrix: starting .*clawmatrix-plugin \(pid \d+\)$/.test(m)), messages(logger).join("\n"));
  assert.ok(messages(logger, "info").some((m) => m.startsWith("clawmatrix: sidecar ready: node adapter-test, version dev, 8 tools, 0 models on http://127.0.0.1:")), messages(logger).join("\n"));
  assert.ok(messages(logger).some((m) => /node started/.test(m)), "the sidecar's log notifications reach the gateway log");

  const exit = once(child, "exit");
  await sup.stop();
  const [code] = await exit;
  assert.equal(code, 0, "shutdown then stdin EOF: the sidecar exits by itself");
  assert.equal(sup.child, null);
  assert.equal(messages(logger).at(-1), "clawmatrix: sidecar stopped");
  assert.ok(fs.statSync(path.join(ctx.stateDir, "clawmatrix", "sidecar.log")).isFile(), "stderr is kept in the state dir");
  await assert.rejects(sup.ensure(), /clawmatrix is stopping/);
});

test("supervisor: a sidecar that dies is restarted with backoff, and callers wait for it", async (t) => {
  const { api, ctx, logger } = host();
  const sup = new Supervisor({ api, ctx });
  t.after(() => sup.stop());
  await sup.ensure();
  const first = sup.child;
  first.kill("SIGKILL");
  await once(first, "exit");
  await new Promise((resolve) => setImmediate(resolve));
  const restarting = messages(logger, "error").find((m) => m.includes("sidecar ended unexpectedly"));
  assert.match(restarting ?? "", /^clawmatrix: sidecar ended unexpectedly \(signal SIGKILL\); restarting in \d+ ms/);
  const delay = Number(/restarting in (\d+) ms/.exec(restarting)[1]);
  assert.ok(delay >= 750 && delay <= 1250, `the first restart waits 1 s ± 25 %, got ${delay} ms`);

  const status = await sup.request("cluster/status", {}, { timeoutMs: 20_000 });
  assert.equal(status.nodeId, "adapter-test");
  assert.notEqual(sup.child, first);
  assert.notEqual(sup.child.pid, first.pid);
  assert.equal(sup.failures, 1);
});

test("supervisor: an invalid config stops it for good, naming the field", async (t) => {
  const { api, ctx, logger } = host({ nodeId: "x", secret: "short", proxyPort: 0 });
  const sup = new Supervisor({ api, ctx });
  t.after(() => sup.stop());
  const want = /^Error: invalid plugins\.entries\.clawmatrix\.config: secret: .*16/;
  await assert.rejects(sup.ensure(), want);
  await assert.rejects(sup.ensure(), want, "the same failure, without a new process");
  assert.equal(messages(logger).filter((m) => m.startsWith("clawmatrix: starting ")).length, 1);
  assert.ok(messages(logger, "error").some((m) => want.test(`Error: ${m.replace(/^clawmatrix: /, "")}`)));
  await sup.exited;
  assert.equal(sup.child, null);
  assert.ok(!messages(logger).some((m) => m.includes("restarting")), "no restart");
});

test("supervisor: a missing binary fails the start, and the next caller tries again", async (t) => {
  const { api, ctx } = host();
  const sup = new Supervisor({ api, ctx });
  t.after(() => sup.stop());
  const real = process.env.CLAWMATRIX_BIN;
  process.env.CLAWMATRIX_BIN = path.join(tempDir(), "missing");
  try {
    await assert.rejects(sup.ensure(), /CLAWMATRIX_BIN=.*missing is not an executable file/);
  } finally {
    process.env.CLAWMATRIX_BIN = real;
  }
  assert.equal((await sup.ensure()).nodeId, "adapter-test");
});

test("supervisor: a request's timeout covers the wait for the start", async (t) => {
  const { api, ctx } = host();
  const sup = new Supervisor({ api, ctx });
  t.after(() => sup.stop());
  await assert.rejects(sup.request("cluster/status", {}, { timeoutMs: 1 }), /^Error: cluster\/status: the sidecar did not start within 1 ms$/);
  assert.equal((await sup.ensure()).nodeId, "adapter-test", "the start itself goes on");
});

test("supervisor: one per process on globalThis, replaced only after a stop", async () => {
  const { api, ctx } = host();
  assert.equal(currentSupervisor(), undefined);
  const sup = supervisorFor(api);
  assert.equal(currentSupervisor(), sup);
  assert.equal(supervisorFor(api), sup);
  assert.equal(globalThis[Symbol.for("clawmatrix.sidecar")], sup, "the handle other module instances look for");
  assert.equal(sup.host.ctx, undefined);
  assert.equal(supervisorFor(api, ctx), sup);
  assert.equal(sup.host.ctx, ctx, "a service context is kept for the next spawn");
  await sup.stop();
  assert.equal(currentSupervisor(), undefined);
  const next = supervisorFor(api);
  assert.notEqual(next, sup);
  await next.stop();
});
