// Where the adapter finds the sidecar binary, and what a miss says.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { binaryCandidates, binaryTarget, platformPackage, resolveBinary } from "../lib/binary.js";
import { tempDir } from "./support.js";

// Every test sees an empty home, so nothing installed on this machine is found.
process.env.HOME = tempDir();

const LINUX_X64 = { platform: "linux", arch: "x64" };

/** The first bytes of an executable for target, enough for binaryTarget. */
function header({ platform, arch }) {
  const b = Buffer.alloc(64);
  if (platform === "darwin") {
    b.writeUInt32LE(0xfeedfacf, 0);
    b.writeUInt32LE({ x64: 0x01000007, arm64: 0x0100000c }[arch], 4);
    return b;
  }
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2; // 64-bit
  b[5] = 1; // little-endian
  b[6] = 1;
  b[7] = { linux: 0, freebsd: 9 }[platform];
  b.writeUInt16LE({ x64: 0x3e, arm64: 0xb7 }[arch], 18);
  return b;
}

function writeExe(file, content) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content, { mode: 0o755 });
  return file;
}

/**
 * An npm install the way OpenClaw makes one: the plugin package and the
 * platform package side by side in one node_modules (or the platform
 * package under the plugin's own node_modules when nested).
 */
function npmProject({ key = "linux-x64", target = LINUX_X64, nested = false } = {}) {
  const modules = path.join(tempDir(), "node_modules");
  const plugin = path.join(modules, "@clawmatrix", "openclaw-plugin");
  fs.mkdirSync(plugin, { recursive: true });
  fs.writeFileSync(path.join(plugin, "package.json"), '{"name": "@clawmatrix/openclaw-plugin"}\n');
  const base = nested ? path.join(plugin, "node_modules") : modules;
  const pkgDir = path.join(base, "@clawmatrix", `openclaw-plugin-${key}`);
  fs.mkdirSync(pkgDir, { recursive: true });
  fs.writeFileSync(path.join(pkgDir, "package.json"), `{"name": "@clawmatrix/openclaw-plugin-${key}"}\n`);
  const bin = writeExe(path.join(pkgDir, "bin", "clawmatrix-plugin"), header(target));
  return { rootDir: plugin, bin };
}

function oneLine(re) {
  return (err) => {
    assert.match(err.message, re);
    assert.ok(!err.message.includes("\n"), `not one line: ${err.message}`);
    return true;
  };
}

test("binary: the installed platform package comes first, hoisted or nested", () => {
  for (const nested of [false, true]) {
    const { rootDir, bin } = npmProject({ nested });
    const other = writeExe(path.join(tempDir(), "clawmatrix-plugin"), header(LINUX_X64));
    assert.equal(resolveBinary({ rootDir }, { CLAWMATRIX_BIN: other, PATH: path.dirname(other) }, LINUX_X64), bin);
    assert.deepEqual(binaryCandidates({ rootDir }, {}, LINUX_X64)[0], { file: bin, from: "platform package" });
  }
  // Another host does not take this host's package.
  const { rootDir } = npmProject();
  const arm = { platform: "linux", arch: "arm64" };
  assert.equal(binaryCandidates({ rootDir }, {}, arm)[0].from, "~/.local/bin");
  assert.throws(() => resolveBinary({ rootDir }, { PATH: "" }, arm), oneLine(/not found \(looked in the platform package @clawmatrix\/openclaw-plugin-linux-arm64, .*install @clawmatrix\/openclaw-plugin-linux-arm64, which `openclaw plugins install @clawmatrix\/openclaw-plugin` brings/));
});

test("binary: CLAWMATRIX_BIN is used as it is, PATH is searched, a miss says what to install", () => {
  const dir = tempDir();
  const bin = writeExe(path.join(dir, "clawmatrix-plugin"), "#!/bin/sh\n");
  assert.equal(resolveBinary({}, { PATH: `/nonexistent${path.delimiter}${dir}` }, LINUX_X64), bin);
  assert.equal(resolveBinary({}, { CLAWMATRIX_BIN: bin, PATH: "" }, LINUX_X64), bin);

  const notExec = path.join(dir, "not-executable");
  fs.writeFileSync(notExec, "x", { mode: 0o644 });
  assert.throws(() => resolveBinary({}, { CLAWMATRIX_BIN: notExec, PATH: dir }, LINUX_X64), oneLine(/CLAWMATRIX_BIN=.*not-executable is not an executable file/));
  assert.throws(() => resolveBinary({}, { PATH: "/nonexistent" }, LINUX_X64), (err) => {
    oneLine(/clawmatrix-plugin binary not found/)(err);
    assert.match(err.message, /install @clawmatrix\/openclaw-plugin-linux-x64/);
    assert.match(err.message, /make install/);
    assert.ok(err.message.includes(path.join(os.homedir(), ".local", "bin")), err.message);
    return true;
  });
});

test("binary: a binary for another platform is refused with what to install", () => {
  const darwin = writeExe(path.join(tempDir(), "clawmatrix-plugin"), header({ platform: "darwin", arch: "arm64" }));
  // An explicit CLAWMATRIX_BIN is not passed over.
  assert.throws(
    () => resolveBinary({}, { CLAWMATRIX_BIN: darwin, PATH: "" }, LINUX_X64),
    oneLine(/CLAWMATRIX_BIN=.* is a darwin-arm64 binary but this gateway runs on linux-x64; unset it and install @clawmatrix\/openclaw-plugin-linux-x64/),
  );
  // A wrong one on PATH is passed over for a right one further on…
  const good = writeExe(path.join(tempDir(), "clawmatrix-plugin"), header(LINUX_X64));
  const env = { PATH: [path.dirname(darwin), path.dirname(good)].join(path.delimiter) };
  assert.equal(resolveBinary({}, env, LINUX_X64), good);
  // …and named when there is none.
  assert.throws(() => resolveBinary({}, { PATH: path.dirname(darwin) }, LINUX_X64), oneLine(/clawmatrix-plugin \(PATH\) is a darwin-arm64 binary but this gateway runs on linux-x64; install @clawmatrix\/openclaw-plugin-linux-x64/));
  // A platform package holding the wrong binary (a state dir copied from
  // another machine) is not run either.
  const { rootDir } = npmProject({ target: { platform: "linux", arch: "arm64" } });
  assert.throws(() => resolveBinary({ rootDir }, { PATH: "" }, LINUX_X64), oneLine(/\(platform package\) is a linux-arm64 binary but this gateway runs on linux-x64/));
});

test("binary: Windows is refused with WSL as the way, other platforms are told to build", () => {
  const win = { platform: "win32", arch: "x64" };
  assert.equal(platformPackage(win), null);
  const exe = writeExe(path.join(tempDir(), "clawmatrix-plugin.exe"), "MZ");
  assert.throws(() => resolveBinary({}, { CLAWMATRIX_BIN: exe, PATH: "" }, win), oneLine(/does not run on Windows natively.*WSL/));

  const bsd = { platform: "freebsd", arch: "x64" };
  assert.equal(platformPackage(bsd), null);
  assert.throws(() => resolveBinary({}, { PATH: "" }, bsd), oneLine(/no prebuilt clawmatrix-plugin exists for freebsd-x64 \(only linux-x64, linux-arm64, darwin-x64, darwin-arm64\): build it/));
  const own = writeExe(path.join(tempDir(), "clawmatrix-plugin"), header(bsd));
  assert.equal(resolveBinary({}, { PATH: path.dirname(own) }, bsd), own);
});

test("binary: headers name their platform; unknown ones are not judged", () => {
  const dir = tempDir();
  const cases = [
    [header(LINUX_X64), LINUX_X64],
    [header({ platform: "linux", arch: "arm64" }), { platform: "linux", arch: "arm64" }],
    [header({ platform: "darwin", arch: "x64" }), { platform: "darwin", arch: "x64" }],
    [header({ platform: "darwin", arch: "arm64" }), { platform: "darwin", arch: "arm64" }],
    [Buffer.from([0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2]), { platform: "darwin", arch: "*" }],
    [Buffer.from("MZ\x90\x00"), { platform: "win32", arch: "*" }],
    [Buffer.from("#!/bin/sh\nexec true\n"), null],
    [Buffer.alloc(0), null],
  ];
  cases.forEach(([bytes, want], i) => {
    const f = path.join(dir, `f${i}`);
    fs.writeFileSync(f, bytes);
    assert.deepEqual(binaryTarget(f), want, `case ${i}`);
  });
  assert.equal(binaryTarget(path.join(dir, "missing")), null);
  // The Node running this test is a real binary for this machine.
  if (["linux", "darwin"].includes(process.platform)) {
    assert.deepEqual(binaryTarget(process.execPath), { platform: process.platform, arch: process.arch });
  }
});

test("binary: the install places in order, a checkout's bin/ last", () => {
  const home = os.homedir();
  const got = binaryCandidates({ rootDir: "/src/clawmatrix" }, {
    CLAWMATRIX_BIN: "/opt/cmx",
    PATH: `/a${path.delimiter}${path.delimiter}/b`,
    GOBIN: "/gobin",
    GOPATH: `/gp1${path.delimiter}/gp2`,
  });
  assert.deepEqual(got, [
    { file: "/opt/cmx", from: "CLAWMATRIX_BIN" },
    { file: "/a/clawmatrix-plugin", from: "PATH" },
    { file: "/b/clawmatrix-plugin", from: "PATH" },
    { file: path.join(home, ".local", "bin", "clawmatrix-plugin"), from: "~/.local/bin" },
    { file: "/gobin/clawmatrix-plugin", from: "GOBIN" },
    { file: "/gp1/bin/clawmatrix-plugin", from: "GOPATH/bin" },
    { file: "/src/clawmatrix/bin/clawmatrix-plugin", from: "plugin folder bin/" },
  ]);
  const bare = binaryCandidates({}, {});
  assert.deepEqual(bare.map((c) => c.from), ["~/.local/bin", "GOPATH/bin"]);
  assert.equal(bare[1].file, path.join(home, "go", "bin", "clawmatrix-plugin"));
});

test("binary: a directory named like the binary is not taken for it", () => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "clawmatrix-plugin"));
  assert.throws(() => resolveBinary({}, { PATH: dir }, LINUX_X64), /binary not found/);
  const root = tempDir();
  fs.mkdirSync(path.join(root, "bin"));
  const bin = path.join(root, "bin", "clawmatrix-plugin");
  fs.writeFileSync(bin, "#!/bin/sh\n", { mode: 0o755 });
  assert.equal(resolveBinary({ rootDir: root }, { PATH: dir }, LINUX_X64), bin);
});
