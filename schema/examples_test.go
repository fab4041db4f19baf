package schema

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The example configs reference TLS files relative to the repository root,
// as `clawmatrix-plugin validate-config testdata/configs/...` run from there
// would see them.
const repoRoot = ".."

func TestValidExampleConfigs(t *testing.T) {
	t.Chdir(repoRoot)
	files, err := filepath.Glob("testdata/configs/valid/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no valid example configs found (err %v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, problems := Parse(raw)
			if len(problems) > 0 {
				t.Fatalf("want valid, got problems:\n%s", joinProblems(problems))
			}
			if cfg == nil {
				t.Fatal("no problems but nil config")
			}
		})
	}
}

func TestInvalidExampleConfigs(t *testing.T) {
	t.Chdir(repoRoot)
	files, err := filepath.Glob("testdata/configs/invalid/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid example configs found (err %v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, problems := Parse(raw)
			if cfg != nil {
				t.Errorf("want nil config with problems, got a config")
			}
			if len(problems) == 0 {
				t.Fatal("want problems, got none")
			}
			got := joinProblems(problems)
			expFile := strings.TrimSuffix(f, ".json") + ".errors.txt"
			if *update {
				if err := os.WriteFile(expFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(expFile)
			if err != nil {
				t.Fatalf("expected problems file: %v (run go test ./schema -run TestInvalidExampleConfigs -update, then review it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\n--- got\n%s--- want\n%s", expFile, got, want)
			}
			for _, secret := range secretsIn(t, raw) {
				if strings.Contains(got, secret) {
					t.Errorf("a secret value appears in the problems:\n%s", got)
				}
			}
		})
	}
}

func joinProblems(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

var secretField = regexp.MustCompile(`"(secret|proxyKey|apiKey|authorization)"\s*:\s*\[?\s*"([^"]+)"`)

// secretsIn returns the values of every secret-bearing field in a raw
// config, however malformed.
func secretsIn(t *testing.T, raw []byte) []string {
	t.Helper()
	var out []string
	for _, m := range secretField.FindAllSubmatch(raw, -1) {
		out = append(out, string(m[2]))
	}
	return out
}
