package schema

import (
	"encoding/json"
	"sync"
)

// ProxyKeyEnv is the environment variable through which OpenClaw sees the
// provider credential of the clawmatrix model proxy: the adapter registers the
// provider with it in envVars (lib/catalog.js) and sets it in process.env
// (index.js), since OpenClaw runs a provider catalog only when its credential
// is present.
const ProxyKeyEnv = "CLAWMATRIX_PROXY_KEY"

// uiHint is one entry of the manifest's uiHints: how OpenClaw's config UI
// labels and explains one config field.
type uiHint struct {
	Label       string `json:"label,omitempty"`
	Help        string `json:"help,omitempty"`
	Placeholder string `json:"placeholder,omitempty"`
	Advanced    bool   `json:"advanced,omitempty"`
	Sensitive   bool   `json:"sensitive,omitempty"`
}

// cliCommand is one root command of the OpenClaw CLI that the plugin owns
// (openclaw clawmatrix …); the adapter registers the same one (lib/cli.js).
type cliCommand struct {
	Name           string `json:"name"`
	Description    string `json:"description"`
	HasSubcommands bool   `json:"hasSubcommands"`
}

// CLICommand is the root command of the plugin's CLI commands.
const CLICommand = "clawmatrix"

type setupProvider struct {
	ID      string   `json:"id"`
	EnvVars []string `json:"envVars"`
}

// manifest is openclaw.plugin.json. Field order is the file's key order.
type manifest struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Providers   []string `json:"providers"`
	Activation  struct {
		OnStartup bool `json:"onStartup"`
	} `json:"activation"`
	Contracts struct {
		Tools []string `json:"tools"`
	} `json:"contracts"`
	Setup struct {
		Providers []setupProvider `json:"providers"`
	} `json:"setup"`
	CLICommands  []cliCommand      `json:"cliCommands"`
	UIHints      map[string]uiHint `json:"uiHints"`
	ConfigSchema json.RawMessage   `json:"configSchema"`
}

// Manifest returns the exact bytes of openclaw.plugin.json.
func Manifest() []byte { return manifestJSON() }

var manifestJSON = sync.OnceValue(func() []byte {
	m := manifest{
		ID:   PluginID,
		Name: "ClawMatrix",
		Description: "Joins OpenClaw gateways on different machines into one cluster: agents see each other, " +
			"use models other nodes serve, run tools on other nodes and hand tasks to their agents.",
		Providers:    []string{PluginID},
		ConfigSchema: ConfigSchema(),
	}
	m.Activation.OnStartup = true
	m.Contracts.Tools = ToolNames()
	m.Setup.Providers = []setupProvider{{ID: PluginID, EnvVars: []string{ProxyKeyEnv}}}
	m.CLICommands = []cliCommand{{Name: CLICommand, HasSubcommands: true,
		Description: "This gateway's clawmatrix node: status, identity, trust, revoke"}}
	m.UIHints = map[string]uiHint{
		"nodeId":         {Label: "Node id", Placeholder: "laptop"},
		"secret":         {Label: "Cluster secret", Help: "Same on every node, at least 16 characters.", Sensitive: true},
		"listen":         {Label: "Accept peers"},
		"listenHost":     {Label: "Listen address", Advanced: true},
		"listenPort":     {Label: "Listen port"},
		"tls":            {Label: "TLS", Advanced: true},
		"identityFile":   {Label: "Node key file", Help: "Leave empty for the default in OpenClaw's state directory.", Advanced: true},
		"knownNodesFile": {Label: "Known nodes file", Help: "Leave empty for the default beside the node key.", Advanced: true},
		"trust":          {Label: "Only these nodes may join", Help: "Node id and public key pairs; clawmatrix-plugin identity prints a node's key.", Advanced: true},
		"revoked":        {Label: "Revoked nodes", Advanced: true},
		"peers":          {Label: "Peers to dial"},
		"agents":         {Label: "Agents offered"},
		"models":         {Label: "Models served"},
		"proxyModels":    {Label: "Remote models used"},
		"tags":           {Label: "Node tags"},
		"proxyPort":      {Label: "Model proxy port", Advanced: true},
		"proxyKey": {Label: "Model proxy key", Help: "Leave empty for a random key per start.",
			Sensitive: true, Advanced: true},
		"toolProxy":         {Label: "Remote tools on this node"},
		"openclawBin":       {Label: "OpenClaw CLI", Advanced: true},
		"maxConcurrentRuns": {Label: "Concurrent handoff runs", Advanced: true},
		"mesh":              {Label: "Failure detection timing", Advanced: true},
		// Dotted keys reach nested fields; "*" stands for every list entry.
		"models.*.upstream.apiKey": {Label: "Upstream API key", Help: "Prefer apiKeyEnv.", Sensitive: true},
	}
	return marshalIndent(m)
})
