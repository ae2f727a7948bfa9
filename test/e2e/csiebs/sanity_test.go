package csiebs_test

import (
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// csiSanity returns the csi-sanity pinned in go.mod (built once into the
// Go cache by make deps).
func csiSanity(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", "csi-sanity").Output()
	if err != nil {
		t.Fatalf("go tool -n csi-sanity: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// allowedSkips are the skip messages of csi-sanity specs that test what
// berth-csi-ebs truly does not advertise. Any other skip fails the test.
var allowedSkips = []string{
	// EC2 attachments have no read-only flag; read-only is honoured on the node.
	"ControllerPublishVolume.readonly field not supported",
	// EBS snapshots are regional: no snapshot topology.
	"SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported",
	// No group controller service (volume group snapshots).
	"GroupControllerService not supported",
}

type junit struct {
	Suites []struct {
		Cases []struct {
			Name    string `xml:"name,attr"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			Failure *struct {
				Message string `xml:"message,attr"`
			} `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func allowedSkip(name, msg string) bool {
	if msg == "pending" { // marked pending (PIt) upstream, not skipped by us
		return true
	}
	for _, k := range allowedSkips {
		if strings.Contains(msg, k) || strings.Contains(name, k) {
			return true
		}
	}
	return false
}

// TestSanity runs csi-sanity against the driver in an instance, with loop
// devices behind every volume, once per access type.
func TestSanity(t *testing.T) {
	for _, access := range []string{"mount", "block"} {
		t.Run(access, func(t *testing.T) {
			tool := csiSanity(t)
			cl := newCluster(t)
			n := cl.startNode(t, "m5.large")
			dir := filepath.Join(cl.dir, "sanity")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			mutable := filepath.Join(dir, "mutable.yaml")
			if err := os.WriteFile(mutable, []byte("throughput: \"150\"\ntagSpecification_1: \"team=storage\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			report := filepath.Join(dir, "junit.xml")
			cmd := exec.Command(tool,
				"--csi.endpoint=unix://"+n.socket,
				"--csi.stagingdir="+filepath.Join(dir, "staging"),
				"--csi.mountdir="+filepath.Join(dir, "mount"),
				"--csi.testvolumesize=1073741824",
				"--csi.testvolumeexpandsize=2147483648",
				"--csi.testvolumemutableparameters="+mutable,
				"--csi.testnodevolumeattachlimit",
				"--csi.testvolumeaccesstype="+access,
				"--ginkgo.junit-report="+report,
				"--ginkgo.timeout=20m",
			)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("csi-sanity (%s): %v\n%s", access, err, tail(string(out), 200))
			}
			b, rerr := os.ReadFile(report)
			if rerr != nil {
				t.Fatalf("junit report: %v", rerr)
			}
			var rep junit
			if err := xml.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			var passed, skipped, failed int
			var badSkips, failures []string
			for _, s := range rep.Suites {
				for _, c := range s.Cases {
					switch {
					case c.Failure != nil:
						failed++
						failures = append(failures, c.Name+": "+c.Failure.Message)
					case c.Skipped != nil:
						skipped++
						t.Logf("skipped: %s (%s)", c.Name, c.Skipped.Message)
						if !allowedSkip(c.Name, c.Skipped.Message) {
							badSkips = append(badSkips, c.Name+" ("+c.Skipped.Message+")")
						}
					default:
						passed++
					}
				}
			}
			sort.Strings(badSkips)
			t.Logf("csi-sanity %s: %d passed, %d failed, %d skipped", access, passed, failed, skipped)
			for _, f := range failures {
				t.Errorf("failed: %s", f)
			}
			for _, s := range badSkips {
				t.Errorf("skipped without an unadvertised capability: %s", s)
			}
			if passed == 0 {
				t.Errorf("no spec passed")
			}
		})
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
