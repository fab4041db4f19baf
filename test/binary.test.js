// Where the adapter finds the sidecar binary, and what a miss says.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { binaryCandidates, resolveBinary } from "../lib/binary.js";
import { tempDir } from "./support.js";

// Every test sees an empty home, so nothing installed on this machine is found.
process.env.HOME = tempDir();

test("binary: CLAWMATRIX_BIN is used as it is, PATH is searched, a miss says what to run", () => {
  const dir = tempDir();
  const bin = path.join(dir, "clawmatrix-plugin");
  fs.writeFileSync(bin, "#!/bin/sh\n", { mode: 0o755 });
  assert.equal(resolveBinary({}, { PATH: `/nonexistent${path.delimiter}${dir}` }), bin);
  assert.equal(resolveBinary({}, { CLAWMATRIX_BIN: bin, PATH: "" }), bin);

  const notExec = path.join(dir, "not-executable");
  fs.writeFileSync(notExec, "x", { mode: 0o644 });
  assert.throws(() => resolveBinary({}, { CLAWMATRIX_BIN: notExec, PATH: dir }), /CLAWMATRIX_BIN=.*not-executable is not an executable file/);
  assert.throws(() => resolveBinary({}, { PATH: "/nonexistent" }), (err) => {
    assert.match(err.message, /clawmatrix-plugin binary not found/);
    assert.match(err.message, /make install/);
    assert.ok(err.message.includes(path.join(os.homedir(), ".local", "bin")), err.message);
    return true;
  });
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
  assert.throws(() => resolveBinary({}, { PATH: dir }), /binary not found/);
  const root = tempDir();
  fs.mkdirSync(path.join(root, "bin"));
  const bin = path.join(root, "bin", "clawmatrix-plugin");
  fs.writeFileSync(bin, "#!/bin/sh\n", { mode: 0o755 });
  assert.equal(resolveBinary({ rootDir: root }, { PATH: dir }), bin);
});
