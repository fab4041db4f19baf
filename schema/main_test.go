package schema

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

// update rewrites the generated files that tests compare against: the
// manifest, the tool catalogue and the expected problems of invalid example
// configs. Review the diff before committing.
var update = flag.Bool("update", false, "rewrite openclaw.plugin.json, openclaw.tools.json and testdata/configs/invalid/*.errors.txt")

func TestMain(m *testing.M) {
	flag.Parse()
	goleak.VerifyTestMain(m)
}
