// NDJSON JSON-RPC 2.0 client over the sidecar's stdin and stdout
// (docs/HOST-PROTOCOL.md, Framing): one JSON object per line, answers matched
// by id in any order, and a request given up on is cancelled on the sidecar
// too.

// The sidecar cuts its own lines at 8 MiB; this only bounds the buffer when
// a broken sidecar never writes a newline.
const MAX_LINE_BYTES = 64 << 20;

// OpenClaw imports the plugin several times as separate module instances,
// and the one supervisor (with its RpcClient) may come from another instance
// than the code that catches its errors: instanceof RpcError is then false.
// The brand is a registered symbol, the same in every instance.
const RPC_ERROR = Symbol.for("clawmatrix.rpcError");

/** A JSON-RPC error answer: the sidecar is running and said no. */
export class RpcError extends Error {
  constructor(method, error) {
    super(`${method}: ${error?.message ?? "error"} (code ${error?.code})`);
    this.code = error?.code;
    this.data = error?.data;
    this[RPC_ERROR] = true;
  }
}

/** Whether err is an RpcError from any instance of this module. */
export function isRpcError(err) {
  return err instanceof Error && err[RPC_ERROR] === true;
}

/** Calls onLine with every non-blank line of a stream, without its "\n". */
export class LineReader {
  constructor(stream, onLine, maxLineBytes = MAX_LINE_BYTES) {
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
      if (this.buf.length > maxLineBytes) {
        onLine(this.buf);
        this.buf = "";
      }
    });
  }
}

/** The client side of the host protocol, on a spawned child's stdio. */
export class RpcClient {
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

  /** Fails every pending request and every later one with err. */
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
