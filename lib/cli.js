// The `openclaw clawmatrix …` commands: status, identity, trust, revoke.
//
// They run in an OpenClaw CLI process, never in the gateway, and start no
// sidecar: a second sidecar would join the mesh under this node's id. They
// show the running gateway's sidecar as it is, through its model proxy on
// 127.0.0.1:<proxyPort> (GET /status.json, docs/STATUS.md, with the state
// dir's proxy key), and fail saying so when no gateway runs. trust and revoke
// change the gateway's known-nodes file with the sidecar binary (its trust
// and revoke commands, given the plugin config so they find the same files
// the gateway uses); the running sidecar watches that file and applies the
// change within seconds, which these commands wait to see.

import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import { fileURLToPath } from "node:url";

import { resolveBinary } from "./binary.js";
import { proxyBaseUrl } from "./catalog.js";
import { resolveStateDir } from "./dirs.js";
import { errorText } from "./errors.js";
import { PLUGIN_ID } from "./ids.js";
import { proxyKeyFile, readProxyKey } from "./proxy-key.js";

const STATUS_TIMEOUT_MS = 5_000;
const BINARY_TIMEOUT_MS = 30_000;
// The sidecar looks at its known-nodes file every second.
const APPLY_WAIT_MS = 10_000;
const APPLY_POLL_MS = 250;

/** A failure to show the user as it is: the command exits 1 with it. */
export class CliError extends Error {}

/**
 * The root command as the manifest declares it (cliCommands in
 * openclaw.plugin.json, generated from schema/manifest.go), which OpenClaw
 * shows in help without loading the plugin.
 */
export function cliDescriptors(file = fileURLToPath(new URL("../openclaw.plugin.json", import.meta.url))) {
  const manifest = JSON.parse(fs.readFileSync(file, "utf8"));
  return (manifest.cliCommands ?? []).map(({ name, description, hasSubcommands }) => ({ name, description, hasSubcommands }));
}

/** Registers the commands with OpenClaw's CLI; io is for tests. */
export function registerClusterCli(api, io = processIO()) {
  if (typeof api.registerCli !== "function") return;
  const descriptors = cliDescriptors();
  api.registerCli(({ program }) => addCommands(program, api, io, descriptors[0]), { descriptors });
}

function processIO() {
  return {
    // process.stdout directly: with --json OpenClaw sends console output to
    // stderr, and stdout must carry the JSON alone.
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
    setExitCode: (code) => {
      process.exitCode = code;
    },
  };
}

function addCommands(program, api, io, root) {
  const cmd = program.command(root.name).description(root.description);
  const run = (fn) => async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      io.err(`clawmatrix: ${err instanceof CliError ? err.message : errorText(err)}\n`);
      io.setExitCode(1);
    }
  };
  cmd
    .command("status")
    .description("Show this node, every peer (link state, route, RTT, agents, models, key) and the last errors, as the running gateway sees them")
    .option("--json", "print the status document (docs/STATUS.md)")
    .action(run((opts) => statusCommand(api, opts, io)));
  cmd
    .command("identity")
    .description("Show this node's id, public key and key fingerprint")
    .option("--json", "print {nodeId, publicKey, fingerprint}")
    .action(run((opts) => identityCommand(api, opts, io)));
  cmd
    .command("trust <nodeId> <publicKey>")
    .description("Pin a node's key (after its key changed, or to undo revoke); the running gateway applies it at once")
    .option("--json", "print the result as JSON")
    .action(run((nodeId, publicKey, opts) => changeCommand(api, "trust", [nodeId, publicKey], opts, io)));
  cmd
    .command("revoke <nodeId>")
    .description("Refuse a node and its key for good; the running gateway cuts its links at once")
    .option("--json", "print the result as JSON")
    .action(run((nodeId, opts) => changeCommand(api, "revoke", [nodeId], opts, io)));
  return cmd;
}

/** What the commands need to reach this gateway's sidecar. */
export function gatewayTarget(api, env = process.env) {
  const cfg = api.pluginConfig;
  if (!cfg || typeof cfg !== "object" || typeof cfg.nodeId !== "string" || !cfg.nodeId) {
    throw new CliError(
      `clawmatrix is not configured here: plugins.entries.${PLUGIN_ID}.config has no nodeId ` +
        `(README.md, Install into OpenClaw, step 3)`,
    );
  }
  const stateDir = resolveStateDir(api);
  if (cfg.proxyPort === 0) {
    throw new CliError(
      `proxyPort is 0 in plugins.entries.${PLUGIN_ID}.config, so only the gateway knows its proxy's port; ` +
        `set a fixed proxyPort and restart the gateway`,
    );
  }
  const base = proxyBaseUrl(cfg).replace(/\/v1$/, "");
  let key = typeof cfg.proxyKey === "string" && cfg.proxyKey ? cfg.proxyKey : null;
  if (!key) {
    const file = proxyKeyFile(stateDir);
    try {
      key = readProxyKey(file);
    } catch (err) {
      throw new CliError(errorText(err));
    }
    if (!key) {
      throw new CliError(
        `no gateway has run clawmatrix with the state dir ${stateDir} (there is no ${file}); ` +
          `start the gateway (openclaw gateway run), or set OPENCLAW_STATE_DIR to the state dir it uses`,
      );
    }
  }
  return { cfg, stateDir, base, key, env };
}

/** GET path on the proxy with the key: {status, body}. */
function get(target, path) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${target.base}${path}`,
      // No pooled socket: it would keep the CLI process alive.
      { agent: false, headers: { Authorization: `Bearer ${target.key}` }, timeout: STATUS_TIMEOUT_MS },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })));
    req.on("error", reject);
  });
}

/** A NotRunning error: nothing answers on the proxy port. */
export class NotRunningError extends CliError {}

/** The running sidecar's status document, or a CliError saying why not. */
export async function readStatus(target) {
  const where = target.base.replace(/^http:\/\//, "");
  let res;
  try {
    res = await get(target, "/status.json");
  } catch (err) {
    if (err.code === "ECONNREFUSED") {
      throw new NotRunningError(
        `no gateway is running clawmatrix with the state dir ${target.stateDir}: nothing answers on ${where} (proxyPort); ` +
          `start the gateway (openclaw gateway run) and try again`,
      );
    }
    if (err.code === "ETIMEDOUT") throw new CliError(`the clawmatrix proxy on ${where} did not answer within ${STATUS_TIMEOUT_MS / 1000} s`);
    throw new CliError(`cannot reach the clawmatrix proxy on ${where}: ${errorText(err)}`);
  }
  if (res.status === 401) {
    throw new CliError(
      `${where} refused the proxy key of the state dir ${target.stateDir}: the gateway there uses another state dir ` +
        `(OPENCLAW_STATE_DIR) or proxyKey, or another program holds that port`,
    );
  }
  if (res.status === 404) {
    throw new CliError(`${where} answered but serves no /status.json: is it a clawmatrix proxy of this version, with telemetry on?`);
  }
  if (res.status !== 200) throw new CliError(`${where} answered /status.json with HTTP ${res.status}`);
  let doc;
  try {
    doc = JSON.parse(res.body);
  } catch {
    throw new CliError(`${where} answered /status.json with something that is not JSON`);
  }
  if (doc?.node?.nodeId !== target.cfg.nodeId) {
    throw new CliError(
      `${where} is node ${JSON.stringify(clean(doc?.node?.nodeId))}, not this config's node ${JSON.stringify(target.cfg.nodeId)}: ` +
        `another gateway uses that proxyPort`,
    );
  }
  return doc;
}

/** One line of peer-supplied text, safe for a terminal. */
function clean(s) {
  return String(s ?? "").replace(/[\p{Cc}\p{Cf}]+/gu, " ");
}

function list(xs) {
  return xs?.length ? xs.map(clean).join(", ") : "-";
}

function ms(v) {
  return typeof v === "number" ? `${v < 10 ? v.toFixed(2) : v.toFixed(0)} ms` : "";
}

/** The human form of a status document. */
export function formatStatus(doc) {
  const lines = [];
  const n = doc.node;
  lines.push(`node ${clean(n.nodeId)} (clawmatrix ${clean(n.version)})  ${clean(n.fingerprint)}`);
  lines.push(`  agents: ${list(n.agents?.map((a) => a.id))}  models: ${list(n.models)}  tags: ${list(n.tags)}`);
  const peers = doc.peers ?? [];
  lines.push(peers.length ? `peers (${peers.length}):` : "peers: none (check peers and listen in the config, on both sides)");
  for (const p of peers) {
    let state = p.status === "relay" ? `relay via ${clean(p.via)}` : clean(p.status);
    if (p.revoked) state += ", revoked";
    const seen = p.status === "down" && p.lastSeen ? `  last seen ${clean(p.lastSeen)}` : "";
    lines.push(`  ${clean(p.nodeId)}  ${state}${p.rttMs !== undefined ? "  " + ms(p.rttMs) : ""}${p.fingerprint ? "  " + clean(p.fingerprint) : ""}${seen}`);
    lines.push(`    agents: ${list(p.agents?.map((a) => a.id))}  models: ${list(p.models)}  tags: ${list(p.tags)}`);
  }
  const errors = doc.errors ?? [];
  if (errors.length) {
    lines.push(`last errors (newest first):`);
    for (const e of errors.slice(0, 10)) {
      lines.push(`  ${clean(e.at)}  ${clean(e.kind)}${e.node ? " " + clean(e.node) : ""}: ${clean(e.message)}`);
    }
  } else {
    lines.push("last errors: none");
  }
  return lines.join("\n") + "\n";
}

export async function statusCommand(api, opts, io) {
  const doc = await readStatus(gatewayTarget(api));
  io.out(opts?.json ? JSON.stringify(doc, null, 2) + "\n" : formatStatus(doc));
}

export async function identityCommand(api, opts, io) {
  const { node } = await readStatus(gatewayTarget(api));
  const id = { nodeId: node.nodeId, publicKey: node.publicKey, fingerprint: node.fingerprint };
  if (opts?.json) {
    io.out(JSON.stringify(id) + "\n");
    return;
  }
  io.out(`node id:     ${clean(id.nodeId)}\npublic key:  ${clean(id.publicKey)}\nfingerprint: ${clean(id.fingerprint)}\n`);
}

/** Runs the sidecar binary's trust or revoke on the gateway's files. */
function runBinary(api, verb, args, stateDir, pluginConfig) {
  let bin;
  try {
    bin = resolveBinary(api);
  } catch (err) {
    throw new CliError(errorText(err));
  }
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [verb, "--state", stateDir, "--plugin-config", "-", "--json", ...args], {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: BINARY_TIMEOUT_MS,
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (err += d));
    child.on("error", (e) => reject(new CliError(`cannot run ${bin}: ${errorText(e)}`)));
    child.on("close", (code) => {
      if (code !== 0) {
        reject(new CliError(err.trim() || `${bin} ${verb} exited with ${code}`));
        return;
      }
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new CliError(`${bin} ${verb} printed something that is not JSON: ${out.slice(0, 200)}`));
      }
    });
    // Only where the identity files are, and the lists that decide on top
    // of them: the binary reads nothing else of it.
    const { nodeId, identityFile, knownNodesFile, trust, revoked } = pluginConfig;
    child.stdin.end(JSON.stringify({ nodeId, identityFile, knownNodesFile, trust, revoked }));
  });
}

/** Whether the status shows the change made by verb. */
function applied(doc, verb, result) {
  const p = (doc.peers ?? []).find((x) => x.nodeId === result.nodeId);
  if (!p) return true; // not connected, nothing to cut or to let back
  if (verb === "revoke") return p.revoked === true && p.status === "down";
  return !p.revoked && p.fingerprint === result.fingerprint;
}

export async function changeCommand(api, verb, args, opts, io) {
  const cfg = api.pluginConfig;
  if (!cfg || typeof cfg !== "object" || !cfg.nodeId) gatewayTarget(api); // throws the not-configured error
  const stateDir = resolveStateDir(api);
  const result = await runBinary(api, verb, args, stateDir, cfg);
  const gateway = { running: false, applied: false };
  let problem = null;
  try {
    const target = gatewayTarget(api);
    const deadline = Date.now() + APPLY_WAIT_MS;
    for (;;) {
      const doc = await readStatus(target);
      gateway.running = true;
      if (applied(doc, verb, result)) {
        gateway.applied = true;
        break;
      }
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, APPLY_POLL_MS));
    }
  } catch (err) {
    if (!(err instanceof NotRunningError) && !/no gateway has run clawmatrix/.test(errorText(err))) problem = err;
  }
  if (opts?.json) {
    io.out(JSON.stringify({ ...result, gateway }) + "\n");
  } else {
    const what = verb === "revoke"
      ? `revoked node ${result.nodeId}${result.fingerprint ? ` (key ${result.fingerprint})` : " (no key known yet)"}`
      : `pinned node ${result.nodeId} to key ${result.fingerprint}`;
    io.out(`${what} in ${result.knownNodesFile}\n`);
    for (const n of result.notes ?? []) io.out(`note: ${n}\n`);
    if (gateway.applied) {
      io.out(verb === "revoke"
        ? `the running gateway applied it: node ${result.nodeId} is cut off (its links closed with 4012) and cannot rejoin\n`
        : `the running gateway applied it\n`);
    } else if (!gateway.running && !problem) {
      io.out("no gateway is running: the change applies when it starts\n");
    }
  }
  if (problem) throw new CliError(`saved, but the running gateway could not be checked: ${errorText(problem)}`);
  if (gateway.running && !gateway.applied) {
    throw new CliError(
      `saved, but the running gateway did not show the change within ${APPLY_WAIT_MS / 1000} s; ` +
        `see openclaw clawmatrix status, and the notes above`,
    );
  }
}
