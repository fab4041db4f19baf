package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDemoShowsEveryStep(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"c   via b", // topology: c is reached through b
		"node c's model answers: hello from node a", // the streamed completion came from c's model
		"this file lives only on node c",            // cluster_exec ran on c
		"researcher on ",                            // the handoff reached c's agent
		`for agent "researcher" on node "c": done`,  // the background handoff, chosen by tag, finished
		"got your task (6 words)",                   // and its result came back
		"Done in",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}
