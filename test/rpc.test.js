// The JSON-RPC client, against a scripted peer process (test/rpc-peer.js)
// for what the sidecar must never do, and against the real sidecar.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { LineReader, RpcClient, RpcError, isRpcError } from "../lib/rpc.js";
import { minimalConfig, sidecarBinary, tempDir } from "./support.js";

const PEER = fileURLToPath(new URL("./rpc-peer.js", import.meta.url));

/** Spawns cmd, wraps it in a client and ends the process after the test. */
function connect(t, cmd, args) {
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "inherit"] });
  const notes = [];
  const problems = [];
  const rpc = new RpcClient(child, {
    onNotification: (method, params) => notes.push({ method, params }),
    onProtocolError: (msg) => problems.push(msg),
  });
  const exited = once(child, "exit");
  t.after(async () => {
    child.stdin.end();
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  });
  return { child, rpc, notes, problems, exited };
}

test("rpc: answers are matched by id whatever their order", async (t) => {
  const { rpc } = connect(t, process.execPath, [PEER]);
  const slow = rpc.request("later", { ms: 200, value: "slow" });
  const fast = rpc.request("later", { ms: 0, value: "fast" });
  const echoed = rpc.request("echo", { a: [1, "two"] });
  assert.deepEqual(await Promise.all([slow, fast, echoed]), ["slow", "fast", { a: [1, "two"] }]);
});

test("rpc: an error answer is an RpcError with the method, code and data", async (t) => {
  const { rpc } = connect(t, process.execPath, [PEER]);
  await assert.rejects(rpc.request("nope", {}), (err) => {
    assert.ok(err instanceof RpcError);
    assert.equal(err.message, "nope: no nope (code -32601)");
    assert.equal(err.code, -32601);
    assert.deepEqual(err.data, { m: "nope" });
    return true;
  });
});

test("rpc: an RpcError is recognised across module instances, as OpenClaw loads the plugin", async () => {
  // A query string makes a second, separate instance of the module.
  const other = await import("../lib/rpc.js?instance=2");
  const theirs = new other.RpcError("tools/call", { code: -32602, message: "bad" });
  assert.equal(theirs instanceof RpcError, false, "the premise: instanceof fails across instances");
  assert.equal(isRpcError(theirs), true);
  assert.equal(other.isRpcError(new RpcError("m", { code: 1 })), true);
  const lookalike = Object.assign(new Error("m: x (code -32602)"), { code: -32602 });
  for (const v of [lookalike, null, undefined, "RpcError", { code: -32602 }]) assert.equal(isRpcError(v), false, String(v));
});

test("rpc: notifications are handed on, a non-JSON line is reported, a request from the peer is refused", async (t) => {
  const { rpc, notes, problems } = connect(t, process.execPath, [PEER]);
  await rpc.request("say", {
    lines: [
      '{"jsonrpc":"2.0","method":"log","params":{"level":"warn","message":"hi"}}\n',
      "\n   \n",
      "not json at all\n",
      '{"jsonrpc":"2.0","id":"s1","method":"ask/adapter","params":{}}\n',
      '{"jsonrpc":"2.0","id":999,"result":"answer to nothing"}\n',
    ],
  });
  assert.deepEqual(notes, [{ method: "log", params: { level: "warn", message: "hi" } }]);
  assert.deepEqual(problems, ["sidecar wrote a non-JSON line on stdout: not json at all"]);
  const seen = await rpc.request("received", {});
  assert.deepEqual(seen.at(-1), { jsonrpc: "2.0", id: "s1", error: { code: -32601, message: "method not found: ask/adapter" } });
});

test("rpc: a timeout or an abort fails the call and cancels it on the peer", async (t) => {
  const { rpc } = connect(t, process.execPath, [PEER]);
  await assert.rejects(rpc.request("never", {}, { timeoutMs: 50 }), /^Error: never: no answer from the sidecar within 50 ms$/);
  const ac = new AbortController();
  const aborted = rpc.request("never", {}, { signal: ac.signal });
  ac.abort();
  await assert.rejects(aborted, /^Error: never: cancelled$/);
  await assert.rejects(rpc.request("echo", {}, { signal: AbortSignal.abort() }), /cancelled/);
  const seen = await rpc.request("received", {});
  assert.deepEqual(seen.map((m) => [m.id, m.method, m.params]), [
    [1, "never", {}],
    [undefined, "$/cancelRequest", { id: 1 }],
    [2, "never", {}],
    [undefined, "$/cancelRequest", { id: 2 }],
  ]);
  assert.equal(rpc.pending.size, 0);
});

test("rpc: when the peer ends, waiting and later calls fail with the closing error", async (t) => {
  const { rpc, exited } = connect(t, process.execPath, [PEER]);
  const waiting = rpc.request("never", {});
  rpc.request("exit", { code: 3 }).catch(() => {});
  const [code] = await exited;
  assert.equal(code, 3);
  const ended = new Error("sidecar ended (exit code 3)");
  rpc.close(ended);
  await assert.rejects(waiting, ended);
  await assert.rejects(rpc.request("echo", {}), ended);
});

test("rpc: a request to a process whose stdin is closed fails at once", async (t) => {
  const { child, rpc } = connect(t, process.execPath, [PEER]);
  child.stdin.end();
  await assert.rejects(rpc.request("echo", {}), /^Error: echo: sidecar stdin is closed$/);
});

test("rpc: lines split across chunks are joined; an endless line is cut at the limit", () => {
  const stream = new PassThrough();
  const lines = [];
  new LineReader(stream, (l) => lines.push(l), 8);
  stream.write("ab");
  stream.write("c\nde");
  stream.write("f\n\nxyz0123456789");
  stream.write("tail\n");
  assert.deepEqual(lines, ["abc", "def", "xyz0123456789", "tail"]);
});

test("rpc: the real sidecar answers before and after initialize", async (t) => {
  const { rpc, notes, exited } = connect(t, sidecarBinary(), ["serve"]);
  await assert.rejects(rpc.request("cluster/status", {}), (err) => err instanceof RpcError && err.code === -32600);
  const state = tempDir();
  const result = await rpc.request("initialize", { config: minimalConfig({ proxyKey: "k" }), stateDir: state, workspaceDir: state }, { timeoutMs: 30_000 });
  assert.equal(result.nodeId, "adapter-test");
  assert.match(result.provider.baseUrl, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  assert.ok(notes.some((n) => n.method === "log" && /node started/.test(n.params.message)), JSON.stringify(notes));
  const status = await rpc.request("cluster/status", {});
  assert.equal(status.nodeId, "adapter-test");
  assert.deepEqual(status.peers, []);
  await rpc.request("shutdown", {}, { timeoutMs: 5_000 });
  rpc.child.stdin.end();
  const [code] = await exited;
  assert.equal(code, 0);
});
