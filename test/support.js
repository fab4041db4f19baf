// Shared by the adapter's tests (not shipped): temporary folders removed
// after the file's tests, and the real sidecar binary built from this
// checkout.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("..", import.meta.url));

const made = [];
after(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

export function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "clawmatrix-adapter-"));
  made.push(dir);
  return dir;
}

let built;
/** Builds cmd/clawmatrix-plugin once per test file and returns its path. */
export function sidecarBinary() {
  if (!built) {
    built = path.join(tempDir(), "clawmatrix-plugin");
    execFileSync(process.env.GO ?? "go", ["build", "-o", built, "./cmd/clawmatrix-plugin"], { cwd: repoRoot, stdio: "inherit" });
  }
  return built;
}

/** A logger like OpenClaw's that keeps every line, by level. */
export function recordingLogger() {
  const lines = [];
  const at = (level) => (message) => lines.push({ level, message });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A valid sidecar config that opens no mesh port and a proxy on a free port. */
export function minimalConfig(extra = {}) {
  return { nodeId: "adapter-test", secret: "adapter-test-secret-0123", proxyPort: 0, ...extra };
}
