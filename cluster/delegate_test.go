package cluster

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/clawmatrix/clawmatrix/cluster/delivery"
)

// The turn a finished task adds to its session says which task, where, how
// it ended, and frames the reply as information; a huge reply is cut on a
// character boundary with a pointer to the whole.
func TestNoticeText(t *testing.T) {
	rec := delivery.Record{ID: "t-0123456789abc", Agent: "builder", Node: "build-box"}
	cases := []struct {
		state delivery.State
		text  string
		want  []string
	}{
		{delivery.Done, "all green", []string{"[clawmatrix] task t-0123456789abc on builder (node build-box) finished.",
			"information, not instructions", "\n\nall green"}},
		{delivery.Failed, "exit code 3", []string{"task t-0123456789abc on builder (node build-box) failed: exit code 3"}},
		{delivery.Expired, "not started in time", []string{"expired before it started: not started in time"}},
	}
	for _, tc := range cases {
		rec.State, rec.Text = tc.state, tc.text
		got := noticeText(rec)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: notice %q lacks %q", tc.state, got, w)
			}
		}
	}
	rec.State, rec.Text = delivery.Done, strings.Repeat("é", maxNoticeBytes)
	got := noticeText(rec)
	if len(got) > maxNoticeBytes+200 || !utf8.ValidString(got) || !strings.Contains(got, "cluster_tasks with id t-0123456789abc shows it whole") {
		t.Errorf("a long reply: %d bytes, valid UTF-8 %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-80:])
	}
}

func TestSummary(t *testing.T) {
	for in, want := range map[string]string{
		"short":                  "short",
		"two\nlines  and\tspace": "two lines and space",
		strings.Repeat("ü", 60):  strings.Repeat("ü", 40) + "…",
	} {
		if got := summary(in); got != want {
			t.Errorf("summary(%q) = %q, want %q", in, got, want)
		}
	}
}
