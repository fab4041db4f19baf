// Where the sidecar binary is found. It is never inside the plugin folder:
// OpenClaw copies that folder on each load, so the binary comes from
// CLAWMATRIX_BIN, PATH or a few install places.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const BIN_NAME = "clawmatrix-plugin";

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

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
