// Where the adapter finds OpenClaw's state dir and the workspace.
import assert from "node:assert/strict";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { pluginStateDir, resolveStateDir, resolveWorkspaceDir } from "../lib/dirs.js";
import { tempDir } from "./support.js";

// Every test sees an empty home, so nothing installed on this machine is found.
process.env.HOME = tempDir();

test("workspace: the host's, then the config's, then OpenClaw's documented defaults", () => {
  const state = "/srv/state";
  const home = os.homedir();
  const cases = [
    ["host context", { workspaceDir: "/ws/ctx" }, {}, {}, "/ws/ctx"],
    ["config with ~", null, { agents: { defaults: { workspace: "~/work" } } }, {}, path.join(home, "work")],
    ["OPENCLAW_WORKSPACE_DIR", null, {}, { OPENCLAW_WORKSPACE_DIR: "/ws/env" }, "/ws/env"],
    ["profile", null, {}, { OPENCLAW_PROFILE: "dev" }, path.join(home, ".openclaw-dev", "workspace")],
    ["profile with a state dir", null, {}, { OPENCLAW_PROFILE: "dev", OPENCLAW_STATE_DIR: state }, path.join(state, "workspace")],
    ["default", null, {}, {}, path.join(state, "workspace")],
  ];
  for (const [name, ctx, config, env, want] of cases) {
    assert.equal(resolveWorkspaceDir({ config }, ctx, state, env), want, name);
  }
});

test("state dir: the service context's, then OPENCLAW_STATE_DIR, then the runtime's, then ~/.openclaw", (t) => {
  const saved = process.env.OPENCLAW_STATE_DIR;
  t.after(() => {
    if (saved === undefined) delete process.env.OPENCLAW_STATE_DIR;
    else process.env.OPENCLAW_STATE_DIR = saved;
  });
  const runtime = { runtime: { state: { resolveStateDir: () => "/from/runtime" } } };
  const broken = {
    get runtime() {
      throw new Error("runtime unavailable in a metadata-only load");
    },
  };

  process.env.OPENCLAW_STATE_DIR = "/from/env";
  assert.equal(resolveStateDir(runtime, { stateDir: "/from/ctx" }), "/from/ctx");
  assert.equal(resolveStateDir(runtime), "/from/env");
  delete process.env.OPENCLAW_STATE_DIR;
  assert.equal(resolveStateDir(runtime), "/from/runtime");
  assert.equal(resolveStateDir(broken), path.join(os.homedir(), ".openclaw"));
  assert.equal(resolveStateDir({}), path.join(os.homedir(), ".openclaw"));
});

test("the plugin's own files live in a clawmatrix folder of the state dir", () => {
  assert.equal(pluginStateDir("/srv/state"), path.join("/srv/state", "clawmatrix"));
});
