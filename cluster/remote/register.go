package remote

import (
	"fmt"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Register installs a handler on node for every remote tool of schema's
// catalogue, under the tool's mesh method, and returns the Target that owns
// their work.
func Register(node *mesh.Node, cfg TargetConfig) (*Target, error) {
	if cfg.CallerTags == nil {
		cfg.CallerTags = func(id string) []string {
			p, _ := node.Peer(id)
			return p.Tags
		}
	}
	t, err := newTarget(node.ID(), cfg)
	if err != nil {
		return nil, err
	}
	for _, tool := range schema.Tools() {
		if tool.Method == "" {
			continue // answered by the calling node
		}
		if _, ok := t.servers[tool.Name]; !ok {
			t.Close()
			return nil, fmt.Errorf("remote: schema's catalogue has remote tool %s, which this node cannot serve", tool.Name)
		}
		node.Handle(tool.Method, t.handler(tool.Name))
	}
	return t, nil
}
