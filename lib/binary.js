// Where the sidecar binary is found, in this order:
// 1. the platform package (@clawmatrix/openclaw-plugin-<os>-<cpu>) that npm
//    installed beside the plugin package, the one that fits this machine;
// 2. CLAWMATRIX_BIN;
// 3. every PATH directory, ~/.local/bin, GOBIN, GOPATH/bin, and bin/ of a
//    checkout loaded in place (plugins.load.paths) for development.
// It is never inside the plugin folder: OpenClaw copies that folder on each
// load.
//
// A binary built for another platform (a copied state dir, a stray
// CLAWMATRIX_BIN) is recognised by its header and refused with one line that
// says which package to install, instead of a spawn error.

import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

export const BIN_NAME = "clawmatrix-plugin";
export const PLUGIN_PACKAGE = "@clawmatrix/openclaw-plugin";

// The platforms with a prebuilt binary, as process.platform-process.arch.
// Windows has none: the sidecar stops remote commands by Unix process group.
export const PREBUILT = ["linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64"];

const WINDOWS =
  "clawmatrix does not run on Windows natively (its sidecar manages processes by Unix process group, " +
  "and no Windows binary is published): run OpenClaw inside WSL (Windows Subsystem for Linux) and " +
  `install ${PLUGIN_PACKAGE} there, where it uses the Linux binary`;

function hostOf(host) {
  return host ?? { platform: process.platform, arch: process.arch };
}

/** The platform package for a host, or null when none is published for it. */
export function platformPackage(host) {
  const key = `${hostOf(host).platform}-${hostOf(host).arch}`;
  return PREBUILT.includes(key) ? `${PLUGIN_PACKAGE}-${key}` : null;
}

/**
 * The binary inside the installed platform package, or null. OpenClaw
 * installs an npm plugin into <state dir>/npm/projects/<name>/node_modules/
 * @clawmatrix/openclaw-plugin and npm puts the platform package beside it
 * (or, if it must, under the plugin's own node_modules). The plugin code
 * runs from a copy of the plugin folder that leaves node_modules out, so the
 * package is resolved from api.rootDir, the real folder, the way Node
 * resolves any dependency of it: that finds it wherever npm put it, and the
 * binary stays outside the folder OpenClaw copies. (OpenClaw 2026.9.6 also
 * snapshots a loaded plugin's declared dependencies, this package among
 * them, under <state dir>/tmp/plugin-captures; the sidecar never runs from
 * such a snapshot, which lives only as long as the process that made it,
 * but from the installed package that `openclaw plugins update` replaces.)
 */
export function platformPackageBinary(api, host) {
  const pkg = platformPackage(host);
  if (!pkg || !api?.rootDir) return null;
  try {
    const manifest = createRequire(path.join(api.rootDir, "package.json")).resolve(`${pkg}/package.json`);
    return path.join(path.dirname(manifest), "bin", BIN_NAME);
  } catch {
    return null; // not installed: not on this platform, or not an npm install
  }
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

const ELF_MACHINES = { 0x3e: "x64", 0xb7: "arm64", 0x03: "ia32", 0x28: "arm", 0x15: "ppc64", 0x16: "s390x", 0xf3: "riscv64" };
const MACHO_CPUS = { 0x01000007: "x64", 0x0100000c: "arm64" };

/**
 * What a binary was built for, from its header: {platform, arch} in Node's
 * names (arch "*" for a universal macOS binary), or null when the header is
 * not one it knows (a script, say), which is then not second-guessed.
 */
export function binaryTarget(file) {
  const head = Buffer.alloc(20);
  let n = 0;
  try {
    const fd = fs.openSync(file, "r");
    try {
      n = fs.readSync(fd, head, 0, head.length, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
  if (n >= 20 && head.readUInt32BE(0) === 0x7f454c46) {
    // ELF: OS ABI at 7 (Go writes 0, System V, for Linux), machine at 18.
    const platform = { 0: "linux", 3: "linux", 9: "freebsd" }[head[7]] ?? null;
    const machine = head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
    return platform ? { platform, arch: ELF_MACHINES[machine] ?? `machine ${machine}` } : null;
  }
  if (n >= 8 && head.readUInt32LE(0) === 0xfeedfacf) {
    const cpu = head.readUInt32LE(4);
    return { platform: "darwin", arch: MACHO_CPUS[cpu] ?? `cpu ${cpu}` };
  }
  if (n >= 4 && head.readUInt32BE(0) === 0xcafebabe) return { platform: "darwin", arch: "*" };
  if (n >= 2 && head[0] === 0x4d && head[1] === 0x5a) return { platform: "win32", arch: "*" };
  return null;
}

function fits(target, host) {
  return !target || (target.platform === host.platform && (target.arch === "*" || target.arch === host.arch));
}

/** Returns the places searched for the sidecar binary, in order. */
export function binaryCandidates(api, env = process.env, host) {
  const out = [];
  const pkg = platformPackageBinary(api, host);
  if (pkg) out.push({ file: pkg, from: "platform package" });
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

/** What to install on this host, as the end of a one-line error. */
function installHint(host) {
  const pkg = platformPackage(host);
  if (!pkg) {
    return (
      `no prebuilt ${BIN_NAME} exists for ${host.platform}-${host.arch} (only ${PREBUILT.join(", ")}): ` +
      `build it from a clawmatrix checkout with \`make install\` (Go 1.26) or set CLAWMATRIX_BIN to its path, then restart the gateway`
    );
  }
  return (
    `install ${pkg}, which \`openclaw plugins install ${PLUGIN_PACKAGE}\` brings with the plugin ` +
    `(\`openclaw plugins update clawmatrix\` for an installed one), or set CLAWMATRIX_BIN to a ${BIN_NAME} built for ` +
    `${host.platform}-${host.arch} (\`make install\` in a checkout), then restart the gateway`
  );
}

function describe(target) {
  return `${target.platform}-${target.arch}`;
}

/**
 * Finds the sidecar binary or throws an error, one line long, that says
 * what was wrong and what to install.
 */
export function resolveBinary(api, env = process.env, host) {
  host = hostOf(host);
  if (host.platform === "win32") throw new Error(WINDOWS);
  let wrong = null; // the first binary found for another platform
  for (const c of binaryCandidates(api, env, host)) {
    if (c.from === "CLAWMATRIX_BIN") {
      // An explicit choice is never silently replaced by another binary.
      if (!isExecutable(c.file)) {
        throw new Error(`CLAWMATRIX_BIN=${c.file} is not an executable file; fix the variable, or unset it and ${installHint(host)}`);
      }
      const target = binaryTarget(c.file);
      if (!fits(target, host)) {
        throw new Error(
          `CLAWMATRIX_BIN=${c.file} is a ${describe(target)} binary but this gateway runs on ${host.platform}-${host.arch}; ` +
            `unset it and ${installHint(host)}`,
        );
      }
      return c.file;
    }
    if (!isExecutable(c.file)) continue;
    const target = binaryTarget(c.file);
    if (fits(target, host)) return c.file;
    wrong ??= { ...c, target };
  }
  if (wrong) {
    throw new Error(
      `${wrong.file} (${wrong.from}) is a ${describe(wrong.target)} binary but this gateway runs on ` +
        `${host.platform}-${host.arch}; ${installHint(host)}`,
    );
  }
  const pkg = platformPackage(host);
  const shown = binaryCandidates(api, env, host)
    .filter((c) => c.from !== "PATH" && c.from !== "CLAWMATRIX_BIN")
    .map((c) => c.file)
    .join(", ");
  throw new Error(
    `${BIN_NAME} binary not found (looked in ${pkg ? `the platform package ${pkg}, ` : ""}CLAWMATRIX_BIN, ` +
      `every PATH directory, ${shown}); ${installHint(host)}`,
  );
}
