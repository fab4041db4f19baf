// The openclaw clawmatrix commands, against real sidecars: what they show of
// a running node, how they fail without one, and trust and revoke taking
// effect in the running node.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";

import { cliDescriptors, formatStatus, registerClusterCli } from "../lib/cli.js";
import { proxyKeyFile } from "../lib/proxy-key.js";
import { Supervisor } from "../lib/supervisor.js";
import { minimalConfig, recordingLogger, repoRoot, sidecarBinary, tempDir } from "./support.js";

const running = [];
before(() => {
  process.env.CLAWMATRIX_BIN = sidecarBinary();
});
after(() => Promise.all(running.map((s) => s.stop())));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** A Commander-like program that keeps the commands registered on it. */
function fakeProgram() {
  const make = (spec) => {
    const c = {
      spec,
      about: "",
      options: [],
      subs: [],
      run: null,
      command(s) {
        const sub = make(s);
        c.subs.push(sub);
        return sub;
      },
      description(d) {
        c.about = d;
        return c;
      },
      option(flag) {
        c.options.push(flag);
        return c;
      },
      action(fn) {
        c.run = fn;
        return c;
      },
    };
    return c;
  };
  return make("openclaw");
}

/** The commands as OpenClaw would run them, with their output kept. */
function cli(pluginConfig) {
  const io = { stdout: "", stderr: "", code: 0 };
  let registered;
  const api = {
    registrationMode: "discovery",
    pluginConfig,
    config: {},
    logger: recordingLogger(),
    registerCli: (registrar, opts) => (registered = { registrar, opts }),
  };
  registerClusterCli(api, {
    out: (s) => (io.stdout += s),
    err: (s) => (io.stderr += s),
    setExitCode: (c) => (io.code = c),
  });
  const program = fakeProgram();
  registered.registrar({ program });
  const root = program.subs[0];
  const run = async (name, ...args) => {
    io.stdout = io.stderr = "";
    io.code = 0;
    const sub = root.subs.find((s) => s.spec.split(" ")[0] === name);
    const opts = args.at(-1) && typeof args.at(-1) === "object" ? args.pop() : {};
    await sub.run(...args, opts, sub);
    return { ...io };
  };
  return { registered, root, run };
}

/** A sidecar as a gateway runs it, with its state dir. */
async function startNode(config) {
  const stateDir = tempDir();
  const sup = new Supervisor({ api: { pluginConfig: config, config: {}, logger: recordingLogger() }, ctx: { stateDir, workspaceDir: stateDir } });
  running.push(sup);
  await sup.ensure();
  return { sup, stateDir, config };
}

async function waitFor(what, cond, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("cli: the commands OpenClaw is told of are the manifest's, with status, identity, trust and revoke", () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, "openclaw.plugin.json"), "utf8"));
  assert.deepEqual(cliDescriptors(), manifest.cliCommands);
  const { registered, root } = cli(minimalConfig());
  assert.deepEqual(registered.opts, { descriptors: manifest.cliCommands });
  assert.equal(root.spec, "clawmatrix");
  assert.equal(root.about, manifest.cliCommands[0].description);
  assert.deepEqual(root.subs.map((s) => s.spec), ["status", "identity", "trust <nodeId> <publicKey>", "revoke <nodeId>"]);
  for (const s of root.subs) assert.deepEqual(s.options, ["--json"], s.spec);
});

test("cli: a host without registerCli gets nothing registered, and nothing breaks", () => {
  assert.doesNotThrow(() => registerClusterCli({ pluginConfig: {}, logger: recordingLogger() }));
});

test("cli: without a usable gateway every command says what is wrong and exits 1", async () => {
  const state = tempDir();
  process.env.OPENCLAW_STATE_DIR = state;
  const port = await freePort();
  const cases = [
    [{}, /^clawmatrix: clawmatrix is not configured here: plugins\.entries\.clawmatrix\.config has no nodeId/],
    [minimalConfig({ proxyPort: 0 }), /^clawmatrix: proxyPort is 0 in plugins\.entries\.clawmatrix\.config, .*set a fixed proxyPort/],
    [minimalConfig({ proxyPort: port }), new RegExp(`^clawmatrix: no gateway has run clawmatrix with the state dir ${state} \\(there is no ${proxyKeyFile(state)}\\)`)],
  ];
  for (const [config, want] of cases) {
    for (const name of ["status", "identity"]) {
      const r = await cli(config).run(name, { json: true });
      assert.match(r.stderr, want, `${name} ${JSON.stringify(config)}`);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, "", "nothing on stdout for a script to mistake for an answer");
    }
  }
  fs.mkdirSync(path.dirname(proxyKeyFile(state)), { recursive: true });
  fs.writeFileSync(proxyKeyFile(state), "key-of-a-gateway-that-stopped\n");
  const r = await cli(minimalConfig({ proxyPort: port })).run("status");
  assert.match(r.stderr, new RegExp(`^clawmatrix: no gateway is running clawmatrix with the state dir ${state}: nothing answers on 127\\.0\\.0\\.1:${port} \\(proxyPort\\); start the gateway`));
  assert.equal(r.code, 1);
  fs.writeFileSync(proxyKeyFile(state), "");
  assert.match((await cli(minimalConfig({ proxyPort: port })).run("identity")).stderr, /the proxy key file .* is empty; delete it and restart the gateway/);
});

test("cli: status and identity show the running node as it is", async () => {
  const portA = await freePort();
  const meshA = await freePort();
  const a = await startNode(minimalConfig({ nodeId: "cli-a", proxyPort: portA, listen: true, listenHost: "127.0.0.1", listenPort: meshA, tags: ["laptop"] }));
  const b = await startNode(minimalConfig({
    nodeId: "cli-b", proxyPort: await freePort(), peers: [{ url: `ws://127.0.0.1:${meshA}`, nodeId: "cli-a" }],
    agents: [{ id: "builder", description: "builds\u001b[31m red" }],
  }));
  process.env.OPENCLAW_STATE_DIR = a.stateDir;
  const { run } = cli(a.config);

  const doc = await waitFor("b connected", async () => {
    const r = await run("status", { json: true });
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    return d.peers.some((p) => p.nodeId === "cli-b" && p.status === "connected") && d;
  });
  const idB = JSON.parse(execFileSync(sidecarBinary(), ["identity", "--state", b.stateDir, "--json"], { encoding: "utf8" }));
  const idA = JSON.parse(execFileSync(sidecarBinary(), ["identity", "--state", a.stateDir, "--json"], { encoding: "utf8" }));
  assert.equal(doc.node.nodeId, "cli-a");
  assert.equal(doc.node.fingerprint, idA.fingerprint);
  assert.equal(doc.peers.find((p) => p.nodeId === "cli-b").fingerprint, idB.fingerprint);

  const text = (await run("status")).stdout;
  assert.match(text, new RegExp(`^node cli-a \\(clawmatrix (dev|[0-9][0-9A-Za-z.+-]*)\\)  ${idA.fingerprint.replace(/[+/]/g, "\\$&")}\n  agents: -  models: -  tags: laptop\n`));
  assert.match(text, /\n {2}cli-b {2}connected( {2}[0-9.]+ ms)? {2}SHA256:\S+\n {4}agents: builder {2}models: - {2}tags: -\n/);
  assert.doesNotMatch(text, /\u001b/, "no escape sequence from a peer reaches the terminal");

  const id = await run("identity", { json: true });
  assert.deepEqual(JSON.parse(id.stdout), { nodeId: "cli-a", publicKey: idA.publicKey, fingerprint: idA.fingerprint });
  assert.equal((await run("identity")).stdout, `node id:     cli-a\npublic key:  ${idA.publicKey}\nfingerprint: ${idA.fingerprint}\n`);

  // Another gateway's key, or another node on the port, is said plainly.
  const other = tempDir();
  fs.mkdirSync(path.dirname(proxyKeyFile(other)), { recursive: true });
  fs.writeFileSync(proxyKeyFile(other), "not-this-gateways-key\n");
  process.env.OPENCLAW_STATE_DIR = other;
  assert.match((await run("status")).stderr, new RegExp(`^clawmatrix: 127\\.0\\.0\\.1:${portA} refused the proxy key of the state dir ${other}`));
  process.env.OPENCLAW_STATE_DIR = a.stateDir;
  const wrong = await cli({ ...a.config, nodeId: "someone-else" }).run("status");
  assert.match(wrong.stderr, new RegExp(`^clawmatrix: 127\\.0\\.0\\.1:${portA} is node "cli-a", not this config's node "someone-else": another gateway uses that proxyPort`));
  assert.equal(wrong.code, 1);
});

test("cli: revoke cuts a linked node off in the running gateway, trust lets it back", async () => {
  const meshA = await freePort();
  const a = await startNode(minimalConfig({ nodeId: "rv-a", proxyPort: await freePort(), listen: true, listenHost: "127.0.0.1", listenPort: meshA }));
  const b = await startNode(minimalConfig({ nodeId: "rv-b", proxyPort: await freePort(), peers: [{ url: `ws://127.0.0.1:${meshA}` }] }));
  process.env.OPENCLAW_STATE_DIR = a.stateDir;
  const { run } = cli(a.config);
  const status = async () => JSON.parse((await run("status", { json: true })).stdout);
  await waitFor("b connected", async () => (await status()).peers.some((p) => p.nodeId === "rv-b" && p.status === "connected"));
  const idB = JSON.parse(execFileSync(sidecarBinary(), ["identity", "--state", b.stateDir, "--json"], { encoding: "utf8" }));

  const r = await run("revoke", "rv-b");
  assert.equal(r.code, 0, r.stderr);
  const known = path.join(a.stateDir, "clawmatrix", "node.known_nodes.json");
  assert.equal(r.stdout.split("\n")[0], `revoked node rv-b (key ${idB.fingerprint}) in ${known}`);
  assert.match(r.stdout, /\nthe running gateway applied it: node rv-b is cut off \(its links closed with 4012\) and cannot rejoin\n$/);
  const after = await status();
  const pb = after.peers.find((p) => p.nodeId === "rv-b");
  assert.deepEqual([pb.status, pb.revoked, pb.fingerprint], ["down", true, idB.fingerprint]);
  assert.ok(after.errors.some((e) => e.kind === "peer" && e.node === "rv-b" && /cut off.*4012/.test(e.message)), JSON.stringify(after.errors));
  // b keeps redialing and stays out.
  await new Promise((res) => setTimeout(res, 1500));
  assert.equal((await status()).peers.find((p) => p.nodeId === "rv-b").status, "down");

  const t = await run("trust", "rv-b", idB.publicKey, { json: true });
  assert.equal(t.code, 0, t.stderr);
  const res = JSON.parse(t.stdout);
  assert.deepEqual(
    { ...res, notes: undefined },
    { nodeId: "rv-b", fingerprint: idB.fingerprint, revoked: false, knownNodesFile: known, notes: undefined, gateway: { running: true, applied: true } },
  );
  await waitFor("b back", async () => (await status()).peers.some((p) => p.nodeId === "rv-b" && p.status === "connected" && !p.revoked));
});

test("cli: trust and revoke with no gateway running change its files, and say when that applies", async () => {
  const state = tempDir();
  process.env.OPENCLAW_STATE_DIR = state;
  const known = path.join(state, "elsewhere.json");
  const { run } = cli(minimalConfig({ nodeId: "offline", proxyPort: await freePort(), knownNodesFile: known, revoked: ["old"] }));
  const r = await run("revoke", "gone-node");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^revoked node gone-node \\(no key known yet\\) in ${known}\n`));
  assert.match(r.stdout, /\nno gateway is running: the change applies when it starts\n$/);
  assert.equal(JSON.parse(fs.readFileSync(known, "utf8")).nodes["gone-node"].revoked, true);
  const bad = await run("trust", "old", "ed25519:nope");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^clawmatrix: clawmatrix-plugin trust: /);
  const self = await run("revoke", "offline");
  assert.match(self.stderr, /"offline" is this node's own id/);
});

test("cli: status text keeps peer text on one line and out of the terminal's control", () => {
  const text = formatStatus({
    node: { nodeId: "n", version: "1", fingerprint: "SHA256:x", agents: [], models: [], tags: [] },
    peers: [{ nodeId: "p\u001b]0;owned\u0007", status: "down", revoked: true, lastSeen: "t", agents: [{ id: "a\nb" }], models: ["m\u202e"], tags: [] }],
    errors: [{ at: "t", kind: "peer", node: "p", message: "line\nbreak\u001b[2J" }],
  });
  assert.doesNotMatch(text, /[\u0000-\u0009\u000b-\u001f\u007f\u202e]/u);
  assert.match(text, /\n {2}p ]0;owned {3}down, revoked  last seen t\n/);
  assert.match(text, /\n {2}t {2}peer p: line break \[2J\n$/);
});
