// The sidecar's process lifecycle: one `clawmatrix-plugin serve` per gateway
// process, started on first need, restarted with backoff when it dies, and
// stopped gracefully (docs/HOST-PROTOCOL.md, Lifecycle).
//
// OpenClaw imports the plugin entry several times as separate module
// instances, so the one supervisor lives on globalThis, never in a module
// variable. Its stderr goes to <state dir>/clawmatrix/sidecar.log, and the
// last lines into the gateway log when it dies.

import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { resolveBinary } from "./binary.js";
import { pluginStateDir } from "./dirs.js";
import { errorText } from "./errors.js";
import { PLUGIN_ID } from "./ids.js";
import { initializeParams } from "./initialize.js";
import { sidecarEnv } from "./proxy-key.js";
import { LineReader, RpcClient, isRpcError } from "./rpc.js";

const HANDLE = Symbol.for("clawmatrix.sidecar");

const INIT_TIMEOUT_MS = 30_000;
const SHUTDOWN_TIMEOUT_MS = 5_000;
const EXIT_GRACE_MS = 5_000;
const KILL_GRACE_MS = 2_000;
const RESTART_MIN_MS = 1_000;
const RESTART_MAX_MS = 30_000;
const HEALTHY_UPTIME_MS = 60_000;
const STDERR_TAIL_LINES = 40;
const SIDECAR_LOG_MAX_BYTES = 10 << 20;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class Supervisor {
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

  #openLog(stateDir) {
    const file = path.join(pluginStateDir(stateDir), "sidecar.log");
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
    const { api, ctx } = this.host;
    const bin = resolveBinary(api); // callers log a failure where it matters to them
    const params = initializeParams(api, ctx, (level, message) => this.#log(level, message));
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
        `sidecar ready: node ${result?.nodeId}, version ${result?.version ?? "unknown"}, ${result?.tools?.length ?? 0} tools, ` +
          `${result?.provider?.models?.length ?? 0} models on ${result?.provider?.baseUrl}`,
      );
      return result;
    } catch (err) {
      if (isRpcError(err) && err.code === -32602) {
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

/**
 * The process's supervisor, made on first use. A caller with a service
 * context (the gateway's start) refreshes the host the next spawn uses.
 */
export function supervisorFor(api, ctx) {
  let sup = globalThis[HANDLE];
  if (!sup || sup.stopped) {
    sup = new Supervisor({ api, ctx });
    globalThis[HANDLE] = sup;
  } else if (ctx) {
    sup.host = { api, ctx };
  }
  return sup;
}

/** The process's supervisor if one was made and not stopped since; never starts one. */
export function currentSupervisor() {
  return globalThis[HANDLE];
}
