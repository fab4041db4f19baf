// A scripted peer for test/rpc.test.js, run as a real process on real pipes:
// it does what the sidecar never should (non-JSON lines, requests to the
// adapter, late answers) so the client's handling of them can be seen.
// Methods: echo (result = params), later {ms, value}, never (no answer),
// say {lines} (writes the raw lines, then answers {}), received (answers
// every message it has read), exit {code}.
import readline from "node:readline";

const received = [];
const answer = (id, result) => process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id, result }) + "\n");

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const msg = JSON.parse(line);
  received.push(msg);
  const p = msg.params ?? {};
  switch (msg.method) {
    case "echo":
      return answer(msg.id, p);
    case "later":
      return setTimeout(() => answer(msg.id, p.value), p.ms);
    case "never":
      return;
    case "say":
      for (const l of p.lines) process.stdout.write(l);
      return answer(msg.id, {});
    case "received":
      return answer(msg.id, received.slice(0, -1));
    case "exit":
      return process.exit(p.code);
    default:
      if (msg.id !== undefined) {
        process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: `no ${msg.method}`, data: { m: msg.method } } }) + "\n");
      }
  }
});
