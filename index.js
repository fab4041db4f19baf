// OpenClaw host adapter for clawmatrix.
//
// This file is deliberately thin: all cluster logic lives in the Go sidecar
// `clawmatrix-plugin`, which this adapter starts once per gateway process and
// drives over NDJSON JSON-RPC 2.0 on its stdin/stdout (docs/HOST-PROTOCOL.md).
//
// Facts about OpenClaw that shape this file:
// - OpenClaw imports this entry several times as separate module instances,
//   from a copy of the plugin folder, so the one sidecar handle lives on
//   globalThis, never in a module variable.
// - Registration must stay cheap and side-effect free (it also runs inside CLI
//   processes): no process is spawned until the service starts or a tool or
//   hook needs the sidecar.
// - The binary is never inside the plugin folder that OpenClaw copies on each
//   load; it is found through CLAWMATRIX_BIN, PATH or a few install places.
// Node built-ins only: the package has no dependencies.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PLUGIN_ID = "clawmatrix";
const PROVIDER_ID = "clawmatrix";
const BIN_NAME = "clawmatrix-plugin";
const HANDLE = Symbol.for("clawmatrix.sidecar");
const KEY_ENV = "CLAWMATRIX_PROXY_KEY";

// Config defaults (README.md, Configuration; the same values as the Default*
// constants in schema/config.go), needed here because OpenClaw builds the
// model catalog without waiting for the sidecar.
const DEFAULT_PROXY_PORT = 19001;
const MODEL_DEFAULTS = Object.freeze({
  api: "openai-completions",
  contextWindow: 128000,
  maxTokens: 4096,
  reasoning: false,
  input: ["text"],
  cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
});

const INIT_TIMEOUT_MS = 30_000;
const HOOK_TIMEOUT_MS = 5_000;
const SHUTDOWN_TIMEOUT_MS = 5_000;
const EXIT_GRACE_MS = 5_000;
const KILL_GRACE_MS = 2_000;
const TOOL_TIMEOUT_SLACK_MS = 30_000;
const TOOL_TIMEOUT_DEFAULT_MS = 15 * 60_000;
const RESTART_MIN_MS = 1_000;
const RESTART_MAX_MS = 30_000;
const HEALTHY_UPTIME_MS = 60_000;
const STDERR_TAIL_LINES = 40;
const MAX_LINE_BYTES = 64 << 20;
const SIDECAR_LOG_MAX_BYTES = 10 << 20;

const pluginDir = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------
// Small helpers

function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function resolveStateDir(api, ctx) {
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

// ---------------------------------------------------------------------------
// Binary resolution

/** Returns the places searched for the sidecar binary, in order. */
export function binaryCandidates(api, env = process.env) {
  const out = [];
  if (env.CLAWMATRIX_BIN) out.push({ file: env.CLAWMATRIX_BIN, from: "CLAWMATRIX_BIN" });
  for (const dir of (env.PATH ?? "").split(path.delimiter)) {
    if (dir) out.push({ file: path.join(dir, BIN_NAME), from: "PATH" });
  }
  const home = os.homedir();
  out.push({ file: path.join(home, ".local", "bin", BIN_NAME), from: "~/.local/bin" });
  if (env.GOBIN) out.push({ file: path.join(env.GOBIN, BIN_NAME), from: "GOBIN" });
  const gopath = (env.GOPATH ?? "").split(path.delimiter)[0] || path.join(home, "go");
  out.push({ file: path.join(gopath, "bin", BIN_NAME), from: "GOPATH/bin" });
  // A development checkout loaded in place: `make build` leaves the binary in
  // <checkout>/bin. api.rootDir is the real folder, not OpenClaw's copy.
  if (api?.rootDir) out.push({ file: path.join(api.rootDir, "bin", BIN_NAME), from: "plugin folder bin/" });
  return out;
}

/** Finds the sidecar binary or throws an error naming every place tried. */
export function resolveBinary(api, env = process.env) {
  const candidates = binaryCandidates(api, env);
  if (env.CLAWMATRIX_BIN) {
    // An explicit choice is never silently replaced by another binary.
    if (isExecutable(env.CLAWMATRIX_BIN)) return env.CLAWMATRIX_BIN;
    throw new Error(
      `CLAWMATRIX_BIN=${env.CLAWMATRIX_BIN} is not an executable file; ` +
        `build it with \`make install\` (or \`go build -o <path> ./cmd/clawmatrix-plugin\`) or fix the variable`,
    );
  }
  for (const c of candidates) if (isExecutable(c.file)) return c.file;
  const shown = candidates
    .filter((c) => c.from !== "PATH")
    .map((c) => c.file)
    .join(", ");
  throw new Error(
    `${BIN_NAME} binary not found (looked in CLAWMATRIX_BIN, every PATH directory, ${shown}); ` +
      `run \`make install\` in the clawmatrix checkout, or set CLAWMATRIX_BIN to the binary's absolute path ` +
      `in the gateway's environment, then restart the gateway`,
  );
}

// ---------------------------------------------------------------------------
// Proxy key: one per state dir, shared by the gateway, its workers and CLI
// processes, created once with mode 0600.

export function loadProxyKey(stateDir) {
  const dir = path.join(stateDir, PLUGIN_ID);
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

// ---------------------------------------------------------------------------
// Models for the clawmatrix provider, built from the plugin config alone.

/** models ∪ proxyModels by id (first wins), config defaults filled. */
export function clusterModels(pluginConfig) {
  const seen = new Set();
  const out = [];
  const all = [...(pluginConfig?.models ?? []), ...(pluginConfig?.proxyModels ?? [])];
  for (const m of all) {
    if (!m || typeof m.id !== "string" || seen.has(m.id)) continue;
    seen.add(m.id);
    out.push(modelEntry(m.id, m));
  }
  return out;
}

function modelEntry(id, m = {}) {
  return {
    id,
    name: m.description || id,
    // The local proxy speaks OpenAI chat completions, whatever the serving
    // node's upstream speaks.
    api: MODEL_DEFAULTS.api,
    reasoning: m.reasoning ?? MODEL_DEFAULTS.reasoning,
    input: m.input ?? [...MODEL_DEFAULTS.input],
    cost: { ...MODEL_DEFAULTS.cost, ...(m.cost ?? {}) },
    contextWindow: m.contextWindow ?? MODEL_DEFAULTS.contextWindow,
    maxTokens: m.maxTokens ?? MODEL_DEFAULTS.maxTokens,
  };
}

export function proxyBaseUrl(pluginConfig) {
  return `http://127.0.0.1:${pluginConfig?.proxyPort ?? DEFAULT_PROXY_PORT}/v1`;
}

// ---------------------------------------------------------------------------
/**
 * The sidecar's environment: the gateway's, without the proxy key. The key
 * reaches the sidecar in the initialize params (config.proxyKey) only, so
 * nothing the sidecar starts can inherit it.
 */
export function sidecarEnv(env) {
  const out = { ...env };
  delete out[KEY_ENV];
  return out;
}

// initialize parameters

/** OpenClaw providers named by this node's served models, OpenAI-compatible only. */
export function servingProviders(pluginConfig, openclawConfig) {
  const configured = openclawConfig?.models?.providers ?? {};
  const out = {};
  for (const m of pluginConfig?.models ?? []) {
    const id = m?.provider;
    if (typeof id !== "string" || out[id] || !Object.hasOwn(configured, id)) continue;
    const p = configured[id];
    const api = p?.api ?? "openai-completions";
    if (typeof p?.baseUrl !== "string" || api !== "openai-completions") continue;
    const entry = { baseUrl: p.baseUrl, api };
    // A SecretRef object cannot be resolved here; the sidecar then sends no key.
    if (typeof p.apiKey === "string" && p.apiKey) entry.apiKey = p.apiKey;
    out[id] = entry;
  }
  return out;
}

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

// ---------------------------------------------------------------------------
// NDJSON JSON-RPC 2.0 client over the sidecar's stdio.

class RpcError extends Error {
  constructor(method, error) {
    super(`${method}: ${error?.message ?? "error"} (code ${error?.code})`);
    this.code = error?.code;
    this.data = error?.data;
  }
}

class LineReader {
  constructor(stream, onLine) {
    this.buf = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      this.buf += chunk;
      let i;
      while ((i = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (line.trim()) onLine(line);
      }
      if (this.buf.length > MAX_LINE_BYTES) {
        onLine(this.buf);
        this.buf = "";
      }
    });
  }
}

class RpcClient {
  constructor(child, { onNotification, onProtocolError }) {
    this.child = child;
    this.nextId = 1;
    this.pending = new Map();
    this.closedWith = null;
    this.onNotification = onNotification;
    this.onProtocolError = onProtocolError;
    new LineReader(child.stdout, (line) => this.#onLine(line));
    child.stdin.on("error", () => {}); // EPIPE after exit is reported through the exit path
  }

  #onLine(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      this.onProtocolError(`sidecar wrote a non-JSON line on stdout: ${line.slice(0, 200)}`);
      return;
    }
    if (msg && typeof msg.method === "string") {
      if (msg.id === undefined || msg.id === null) {
        this.onNotification(msg.method, msg.params);
      } else {
        this.#write({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: `method not found: ${msg.method}` } });
      }
      return;
    }
    const p = this.pending.get(msg?.id);
    if (!p) return; // a late answer to a request that already timed out
    this.pending.delete(msg.id);
    p.cleanup();
    if (msg.error) p.reject(new RpcError(p.method, msg.error));
    else p.resolve(msg.result);
  }

  #write(obj) {
    if (this.closedWith || !this.child.stdin.writable) return false;
    this.child.stdin.write(JSON.stringify(obj) + "\n");
    return true;
  }

  request(method, params, { timeoutMs, signal } = {}) {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (signal?.aborted) return Promise.reject(new Error(`${method}: cancelled`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      let timer;
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const fail = (err) => {
        if (this.pending.delete(id)) {
          cleanup();
          reject(err);
          return true;
        }
        return false;
      };
      // Giving up on a request also tells the sidecar, so a remote command
      // or agent run it started is stopped instead of running on unseen.
      const abandon = (err) => {
        if (fail(err)) this.#write({ jsonrpc: "2.0", method: "$/cancelRequest", params: { id } });
      };
      const onAbort = () => abandon(new Error(`${method}: cancelled`));
      this.pending.set(id, { method, resolve, reject, cleanup });
      if (timeoutMs) timer = setTimeout(() => abandon(new Error(`${method}: no answer from the sidecar within ${timeoutMs} ms`)), timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (!this.#write({ jsonrpc: "2.0", id, method, params })) fail(new Error(`${method}: sidecar stdin is closed`));
    });
  }

  close(err) {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const p of this.pending.values()) {
      p.cleanup();
      p.reject(err);
    }
    this.pending.clear();
  }
}

// ---------------------------------------------------------------------------
// The supervisor: one per gateway process, on globalThis.

class Supervisor {
  constructor(host) {
    this.host = host; // {api, ctx}: refreshed by every caller, used for the next spawn
    this.child = null;
    this.rpc = null;
    this.ready = null; // Promise<initialize result> for the current or next process
    this.initResult = null;
    this.stopped = false;
    this.failures = 0;
    this.stderrTail = [];
    this.onProcessExit = () => this.child?.kill("SIGKILL");
    process.once("exit", this.onProcessExit);
  }

  get logger() {
    return this.host.api.logger;
  }

  /** Returns the initialize result, starting the sidecar if needed. */
  ensure() {
    if (this.stopped) return Promise.reject(new Error("clawmatrix is stopping"));
    if (!this.ready) {
      const p = this.#start();
      this.ready = p;
      // A start that failed without a process (e.g. missing binary) is retried
      // by the next caller; one whose process died is restarted with backoff.
      p.catch(() => {
        if (this.ready === p && !this.child && !this.fatal) this.ready = null;
      });
    }
    return this.ready;
  }

  /**
   * Sends a request once the sidecar is up. opts.timeoutMs covers the wait
   * for a start or restart too, so a hook never holds a turn for longer.
   */
  async request(method, params, opts = {}) {
    const started = Date.now();
    const ready = this.ensure();
    if (opts.timeoutMs) {
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${method}: the sidecar did not start within ${opts.timeoutMs} ms`)), opts.timeoutMs);
      });
      try {
        await Promise.race([ready, late]);
      } finally {
        clearTimeout(timer);
      }
    } else {
      await ready;
    }
    const timeoutMs = opts.timeoutMs ? Math.max(1, opts.timeoutMs - (Date.now() - started)) : undefined;
    return this.rpc.request(method, params, { ...opts, timeoutMs });
  }

  #log(level, message) {
    const fn = this.logger?.[level] ?? this.logger?.info;
    fn?.call(this.logger, `clawmatrix: ${message}`);
  }

  #initParams() {
    const { api, ctx } = this.host;
    const stateDir = resolveStateDir(api, ctx);
    const pluginConfig = api.pluginConfig ?? {};
    const config = { ...pluginConfig };
    config.proxyKey ??= loadProxyKey(stateDir);
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
      this.#log("warn", `cannot create the workspace ${params.workspaceDir}: ${errorText(err)}`);
    }
    return params;
  }

  #openLog(stateDir) {
    const file = path.join(stateDir, PLUGIN_ID, "sidecar.log");
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      const size = fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
      return fs.createWriteStream(file, { flags: size > SIDECAR_LOG_MAX_BYTES ? "w" : "a", mode: 0o600 });
    } catch (err) {
      this.#log("warn", `cannot write ${file}: ${errorText(err)}`);
      return null;
    }
  }

  async #start() {
    const { api } = this.host;
    const bin = resolveBinary(api); // callers log a failure where it matters to them
    const params = this.#initParams();
    const logFile = this.#openLog(params.stateDir);
    const child = spawn(bin, ["serve"], {
      cwd: params.stateDir,
      env: sidecarEnv(process.env),
      stdio: ["pipe", "pipe", "pipe"],
    });
    const startedAt = Date.now();
    this.child = child;
    this.stderrTail = [];
    const rpc = new RpcClient(child, {
      onNotification: (method, p) => this.#onNotification(method, p),
      onProtocolError: (msg) => this.#log("warn", msg),
    });
    this.rpc = rpc;
    new LineReader(child.stderr, (line) => {
      logFile?.write(line + "\n");
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    });

    const exited = new Promise((resolve) => {
      child.once("error", (err) => resolve({ err }));
      child.once("exit", (code, signal) => resolve({ code, signal }));
    });
    this.exited = exited;
    exited.then(({ err, code, signal }) => {
      const why = err ? errorText(err) : signal ? `signal ${signal}` : `exit code ${code}`;
      rpc.close(new Error(`clawmatrix sidecar ended (${why})`));
      logFile?.end();
      if (this.child !== child) return;
      this.child = null;
      this.rpc = null;
      this.initResult = null;
      if (this.stopped || this.fatal) return;
      this.#scheduleRestart(why, Date.now() - startedAt);
    });

    this.#log("info", `starting ${bin} (pid ${child.pid})`);
    try {
      const result = await rpc.request("initialize", params, { timeoutMs: INIT_TIMEOUT_MS });
      this.initResult = result;
      this.#log(
        "info",
        `sidecar ready: node ${result?.nodeId}, ${result?.tools?.length ?? 0} tools, ` +
          `${result?.provider?.models?.length ?? 0} models on ${result?.provider?.baseUrl}`,
      );
      return result;
    } catch (err) {
      if (err instanceof RpcError && err.code === -32602) {
        // An invalid config does not heal by restarting: stop and say why.
        const lines = (err.data?.errors ?? []).map((e) => `${e.path}: ${e.message}`);
        this.fatal = new Error(
          `invalid plugins.entries.${PLUGIN_ID}.config: ${lines.join("; ") || err.message}`,
        );
        this.#log("error", this.fatal.message);
        this.#terminate(child).catch(() => {});
        throw this.fatal;
      }
      this.#log("error", `initialize failed: ${errorText(err)}`);
      child.kill("SIGKILL");
      throw err;
    }
  }

  #scheduleRestart(why, uptimeMs) {
    if (uptimeMs >= HEALTHY_UPTIME_MS) this.failures = 0;
    this.failures++;
    const base = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** (this.failures - 1));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    const tail = this.stderrTail.slice(-10).join("\n");
    this.#log("error", `sidecar ended unexpectedly (${why}); restarting in ${delay} ms` + (tail ? `; last output:\n${tail}` : ""));
    // Callers arriving during the backoff wait for the restarted process.
    const ready = sleep(delay).then(() => {
      if (this.stopped) throw new Error("clawmatrix is stopping");
      if (this.ready !== ready) return this.ready;
      this.ready = null;
      return this.ensure();
    });
    ready.catch(() => {});
    this.ready = ready;
  }

  #onNotification(method, params) {
    if (method !== "log") return;
    const level = ["debug", "info", "warn", "error"].includes(params?.level) ? params.level : "info";
    this.#log(level, String(params?.message ?? ""));
  }

  async #terminate(child) {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const within = (ms) => Promise.race([exited.then(() => true), sleep(ms).then(() => false)]);
    child.stdin.end();
    if (await within(EXIT_GRACE_MS)) return;
    this.#log("warn", `sidecar did not exit within ${EXIT_GRACE_MS} ms of stdin EOF; sending SIGTERM`);
    child.kill("SIGTERM");
    if (await within(KILL_GRACE_MS)) return;
    child.kill("SIGKILL");
    await within(KILL_GRACE_MS);
  }

  /** Graceful stop: shutdown request, stdin EOF, then signals. */
  async stop() {
    this.stopped = true;
    if (globalThis[HANDLE] === this) delete globalThis[HANDLE];
    const child = this.child;
    if (child) {
      if (this.rpc && this.initResult) {
        await this.rpc.request("shutdown", {}, { timeoutMs: SHUTDOWN_TIMEOUT_MS }).catch((err) => {
          this.#log("warn", `shutdown: ${errorText(err)}`);
        });
      }
      await this.#terminate(child);
    }
    process.removeListener("exit", this.onProcessExit);
    if (child) this.#log("info", "sidecar stopped");
  }
}

function supervisorFor(api, ctx) {
  let sup = globalThis[HANDLE];
  if (!sup || sup.stopped) {
    sup = new Supervisor({ api, ctx });
    globalThis[HANDLE] = sup;
  } else if (ctx) {
    sup.host = { api, ctx };
  }
  return sup;
}

// ---------------------------------------------------------------------------
// Registration

function readToolCatalogue() {
  const file = path.join(pluginDir, "openclaw.tools.json");
  const tools = JSON.parse(fs.readFileSync(file, "utf8"));
  if (!Array.isArray(tools)) throw new Error(`${file}: expected an array of tools`);
  return tools;
}

function toolTimeout(params) {
  const t = Number(params?.timeoutMs);
  return Number.isFinite(t) && t > 0 ? t + TOOL_TIMEOUT_SLACK_MS : TOOL_TIMEOUT_DEFAULT_MS;
}

function registerTools(api) {
  let tools;
  try {
    tools = readToolCatalogue();
  } catch (err) {
    api.logger.error(`clawmatrix: cannot read the tool catalogue, no cluster tools registered: ${errorText(err)}`);
    return;
  }
  for (const t of tools) {
    api.registerTool({
      name: t.name,
      label: t.label,
      description: t.description,
      parameters: t.parameters,
      async execute(toolCallId, params, signal) {
        try {
          const r = await supervisorFor(api).request(
            "tools/call",
            { name: t.name, arguments: params ?? {}, callId: toolCallId },
            { timeoutMs: toolTimeout(params), signal },
          );
          const details = { ...(r?.details && typeof r.details === "object" ? r.details : { value: r?.details }) };
          if (r?.isError) details.isError = true;
          return { content: Array.isArray(r?.content) ? r.content : [], details };
        } catch (err) {
          api.logger.error(`clawmatrix: ${t.name}: ${errorText(err)}`);
          // The sidecar answered with an error: it is running, so say what it said.
          const text = err instanceof RpcError
            ? `${t.name} failed: ${err.message}`
            : `${t.name} failed: clawmatrix is unavailable on this node (${errorText(err)}). ` +
              `Tell the user; the gateway log has details.`;
          return { content: [{ type: "text", text }], details: { isError: true } };
        }
      },
    });
  }
}

function registerProvider(api, key) {
  const pluginConfig = api.pluginConfig ?? {};
  const configuredUrl = proxyBaseUrl(pluginConfig);
  // With proxyPort 0 only the running sidecar knows its port: prefer the URL
  // it reported. Processes without a sidecar (the CLI) use the configured one,
  // so README asks for a fixed proxyPort under OpenClaw.
  const liveUrl = () => globalThis[HANDLE]?.initResult?.provider?.baseUrl;
  const known = () => clusterModels(pluginConfig);
  api.registerProvider({
    id: PROVIDER_ID,
    label: "clawmatrix cluster",
    envVars: [KEY_ENV],
    auth: [],
    catalog: {
      order: "simple",
      // Never starts a sidecar: the catalog also runs in CLI processes, where
      // a second sidecar would join the mesh under this node's id.
      run: async () => ({
        provider: { baseUrl: liveUrl() ?? configuredUrl, api: "openai-completions", apiKey: key, models: known() },
      }),
    },
    // The cluster is dynamic: a model served by any node is reachable even if
    // this node's config does not list it; the proxy answers 404 otherwise.
    resolveDynamicModel: (ctx) => {
      const m = known().find((x) => x.id === ctx.modelId) ?? modelEntry(ctx.modelId);
      return { ...m, provider: PROVIDER_ID, baseUrl: liveUrl() ?? configuredUrl };
    },
  });
}

function registerHook(api) {
  api.on("before_prompt_build", async (_event, ctx) => {
    try {
      const r = await supervisorFor(api).request(
        "hooks/beforePromptBuild",
        { agentId: ctx?.agentId, sessionKey: ctx?.sessionKey },
        { timeoutMs: HOOK_TIMEOUT_MS },
      );
      return r?.prependContext ? { prependContext: r.prependContext } : undefined;
    } catch (err) {
      // Never block a turn on the cluster.
      api.logger.warn(`clawmatrix: no cluster context for this prompt: ${errorText(err)}`);
      return undefined;
    }
  });
}

function registerService(api) {
  api.registerService({
    id: PLUGIN_ID,
    async start(ctx) {
      try {
        await supervisorFor(api, ctx).ensure();
      } catch (err) {
        api.logger.error(`clawmatrix: service start failed: ${errorText(err)}`);
      }
    },
    async stop() {
      await globalThis[HANDLE]?.stop();
    },
  });
}

export default {
  id: PLUGIN_ID,
  name: "clawmatrix",
  description: "Joins OpenClaw gateways into one cluster: remote models, tools and agents.",
  register(api) {
    if (api.registrationMode === "cli-metadata") return;
    let key = api.pluginConfig?.proxyKey;
    if (!key) {
      try {
        key = loadProxyKey(resolveStateDir(api));
      } catch (err) {
        api.logger.error(`clawmatrix: cannot create the proxy key: ${errorText(err)}`);
      }
    }
    // Without a credential present OpenClaw never runs the provider catalog.
    if (key) process.env[KEY_ENV] ??= key;
    if (key) registerProvider(api, key);
    registerTools(api);
    registerHook(api);
    registerService(api);
  },
};
