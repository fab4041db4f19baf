// The names OpenClaw knows this plugin by. The plugin id is also its config
// key (plugins.entries.clawmatrix) and its folder in OpenClaw's state dir.
export const PLUGIN_ID = "clawmatrix";
export const PROVIDER_ID = "clawmatrix";
