package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var timestamp = regexp.MustCompile(`(?m)^time=\S+ `)

var update = flag.Bool("update", false, "rewrite the expected files of node-bootstrap/cases")

// TestCases runs `config explain` on every case under cases/<name>/: its
// args file lists flags (one per line; $CASE is the case directory), its
// optional env file environment variables, its expected.txt is the output,
// or the error text for a case that must fail. test/e2e/bootstrap runs the
// same cases with the user data served by localcloud's IMDS.
func TestCases(t *testing.T) {
	dirs, err := filepath.Glob("cases/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			abs, _ := filepath.Abs(dir)
			raw, err := os.ReadFile(filepath.Join(dir, "args"))
			if err != nil {
				t.Fatal(err)
			}
			// An optional env file sets environment variables (KEY=VALUE lines).
			if env, err := os.ReadFile(filepath.Join(dir, "env")); err == nil {
				for _, l := range strings.Split(strings.TrimSpace(string(env)), "\n") {
					if k, v, ok := strings.Cut(l, "="); ok {
						t.Setenv(k, v)
					}
				}
			}
			args := []string{"config", "explain", "--drop-in-dir", filepath.Join(abs, "dropin")}
			for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					args = append(args, strings.ReplaceAll(l, "$CASE", abs))
				}
			}
			root := newRootCommand()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(args)
			if err := root.Execute(); err != nil {
				out.WriteString("error: " + strings.ReplaceAll(err.Error(), abs, "$CASE") + "\n")
			}
			// Log lines lose their timestamps.
			got := timestamp.ReplaceAllString(strings.ReplaceAll(out.String(), abs, "$CASE"), "")
			want := filepath.Join(dir, "expected.txt")
			if *update {
				if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			b, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run go test ./node-bootstrap -update)", err)
			}
			if string(b) != got {
				t.Fatalf("output differs from %s\n--- got\n%s--- want\n%s", want, got, b)
			}
		})
	}
}
