package proxy

import (
	"github.com/clawmatrix/clawmatrix/schema"
)

// OpenClawModel is one model of the clawmatrix provider as OpenClaw lists it
// (json: id, name, api, reasoning, input, cost, contextWindow, maxTokens).
type OpenClawModel = schema.CatalogModel

// OpenClawModels returns the models to hand OpenClaw in initialize:
// models ∪ proxyModels by id, the first entry of an id winning, with every
// field filled (schema.DefaultModelParams for any left zero, name =
// description or id), so a config built in code and one parsed from JSON
// give the same list.
func OpenClawModels(cfg *schema.Config) []OpenClawModel {
	out := cfg.CatalogModels()
	def := schema.DefaultModelParams()
	for i := range out {
		m := &out[i]
		if m.ContextWindow <= 0 {
			m.ContextWindow = def.ContextWindow
		}
		if m.MaxTokens <= 0 {
			m.MaxTokens = def.MaxTokens
		}
		if len(m.Input) == 0 {
			m.Input = append([]string(nil), def.Input...)
		}
	}
	return out
}
