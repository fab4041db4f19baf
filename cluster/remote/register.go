package remote

import "github.com/clawmatrix/clawmatrix/cluster/mesh"

// Register installs the remote-tool handlers on node and returns the Target
// that owns their work.
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
	node.Handle(MethodExec, t.handler(ToolExec, t.serveExec))
	node.Handle(MethodRead, t.handler(ToolRead, t.serveRead))
	node.Handle(MethodWrite, t.handler(ToolWrite, t.serveWrite))
	node.Handle(MethodTool, t.handler(ToolTool, t.serveTool))
	node.Handle(MethodHandoff, t.handler(ToolHandoff, t.serveHandoff))
	return t, nil
}
