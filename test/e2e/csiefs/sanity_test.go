package csiefs_test

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// csiSanity returns the csi-sanity pinned in go.mod.
func csiSanity(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", "csi-sanity").Output()
	if err != nil {
		t.Fatalf("go tool -n csi-sanity: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// allowedSkips are the skip messages of csi-sanity specs that test what
// berth-csi-efs truly does not advertise. Any other skip fails the test:
// in particular the node publish/unpublish specs (which the AWS EFS
// driver skips) must run.
var allowedSkips = []string{
	"ControllerPublishVolume not supported", // EFS needs no attach
	"ListVolumes not supported",
	"GetCapacity not supported",
	"Snapshot not supported", "CreateSnapshot not supported", "ListSnapshots not supported", "GetSnapshot not supported",
	"Volume Cloning not supported",
	"Controller Expansion not supported", "ControllerExpandVolume not supported", "Node Expansion not supported", "NodeExpandVolume not supported",
	"Modify volume not supported", "ModifyVolume not supported",
	"SINGLE_NODE_MULTI_WRITER not supported",
	"ControllerGetVolume not supported", "VolumeCondition", "Volume condition",
	"GroupControllerService not supported",
	"SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported",
	"ControllerUnpublishVolume not supported", "Controller Publish, UnpublishVolume not supported",
	"Modify Volume not supported",
	"ControllerGetVolumeHealth not supported", "ControllerListVolumeHealth not supported",
	"Service does not have single node multi writer capability",
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
	if msg == "pending" {
		return true
	}
	for _, k := range allowedSkips {
		if strings.Contains(msg, k) {
			return true
		}
	}
	return false
}

// TestSanity runs csi-sanity v5.6.0 against the driver inside an instance,
// provisioning access points on a localcloud file system and bind-mounting
// their directories: controller, node stage/publish/unpublish, stats. The
// split case serves the controller from one instance and the node from
// another, as a Deployment and a DaemonSet would.
func TestSanity(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(map[bool]string{false: "all", true: "split"}[split], func(t *testing.T) {
			tool := csiSanity(t)
			cl := newCluster(t)
			n := cl.startNode(t, "--delete-access-point-root-dir")
			args := []string{"--csi.endpoint=unix://" + n.socket}
			if split {
				ctrl := n
				n = cl.startNode(t, "--mode", "node")
				args = []string{"--csi.endpoint=unix://" + n.socket, "--csi.controllerendpoint=unix://" + ctrl.socket}
			}
			runSanity(t, cl, tool, args)
		})
	}
}

func runSanity(t *testing.T, cl *cluster, tool string, endpoints []string) {
	dir := filepath.Join(cl.dir, "sanity")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	params := filepath.Join(dir, "params.yaml")
	body := fmt.Sprintf("provisioningMode: efs-ap\nfileSystemId: %s\ndirectoryPerms: \"700\"\ngidRangeStart: \"1000\"\ngidRangeEnd: \"1999\"\nbasePath: /sanity\n", cl.fsID)
	if err := os.WriteFile(params, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "junit.xml")
	cmd := exec.Command(tool, append(endpoints,
		"--csi.stagingdir="+filepath.Join(dir, "staging"),
		"--csi.mountdir="+filepath.Join(dir, "mount"),
		"--csi.testvolumesize=1073741824",
		"--csi.testvolumeparameters="+params,
		"--csi.testvolumeaccesstype=mount",
		"--ginkgo.junit-report="+report,
		"--ginkgo.timeout=10m",
	)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("csi-sanity: %v\n%s", err, tail(string(out), 200))
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
	publishRan := false
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
				if strings.Contains(c.Name, "NodeUnpublishVolume") && strings.Contains(c.Name, "should remove target path") {
					publishRan = true
				}
			}
		}
	}
	sort.Strings(badSkips)
	t.Logf("csi-sanity: %d passed, %d failed, %d skipped", passed, failed, skipped)
	for _, f := range failures {
		t.Errorf("failed: %s", f)
	}
	for _, s := range badSkips {
		t.Errorf("skipped without an unadvertised capability: %s", s)
	}
	if !publishRan {
		t.Errorf("the node publish/unpublish spec (should remove target path) did not pass")
	}
	// Every access point sanity made was deleted, with its directory.
	left, err := os.ReadDir(filepath.Join(cl.efsRoot(), cl.fsID, "sanity"))
	if err == nil && len(left) > 0 {
		t.Errorf("directories left under /sanity after csi-sanity deleted its volumes: %d", len(left))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
