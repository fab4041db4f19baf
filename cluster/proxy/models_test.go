package proxy

import (
	"encoding/json"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

func TestOpenClawModels(t *testing.T) {
	cfg := &schema.Config{
		Models: []schema.Model{
			{ID: "a", Provider: "p", Description: "Model A", ModelParams: schema.ModelParams{API: "openai-completions", ContextWindow: 32000, MaxTokens: 1000, Reasoning: true, Input: []string{"text", "image"}, Cost: schema.Cost{Input: 1, Output: 2}}},
			{ID: "bare", Provider: "p"}, // built in code: params left zero
		},
		ProxyModels: []schema.ProxyModel{
			{ID: "a", NodeID: "x", Description: "loses to the local entry"},
			{ID: "remote", NodeID: "gpu", ModelParams: schema.DefaultModelParams()},
		},
	}
	got, err := json.Marshal(OpenClawModels(cfg))
	if err != nil {
		t.Fatal(err)
	}
	want := `[` +
		`{"id":"a","name":"Model A","api":"openai-completions","reasoning":true,"input":["text","image"],"cost":{"input":1,"output":2,"cacheRead":0,"cacheWrite":0},"contextWindow":32000,"maxTokens":1000},` +
		`{"id":"bare","name":"bare","api":"openai-completions","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":128000,"maxTokens":4096},` +
		`{"id":"remote","name":"remote","api":"openai-completions","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":128000,"maxTokens":4096}]`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if len(OpenClawModels(&schema.Config{})) != 0 {
		t.Fatal("empty config gave models")
	}
}
