package bench

// The model upstream behind each serving node in the fault suites: the mock
// model server answering at once with the request's own words and the name
// of the node it belongs to, so the bench can check that every answer is the
// answer to its request, from the node the proxy says served it. It keeps no
// record of requests, which a long soak cannot afford.

import "github.com/clawmatrix/clawmatrix/internal/mockllm"

func startEchoUpstream(node string) (*mockllm.Server, error) {
	return mockllm.Start(mockllm.Options{Name: node, NoRecord: true, Reply: mockllm.Echo(echoPrefix(node))})
}

func echoPrefix(node string) string { return "node=" + node + " echo: " }

// echoText is the reply an echo upstream of node gives to a user message.
func echoText(node, msg string) string { return echoPrefix(node) + msg }
