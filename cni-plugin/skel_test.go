package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	cniversion "github.com/containernetworking/cni/pkg/version"
)

// The dispatcher against skel v1.3.0 itself: same inputs, same calls,
// same output and errors.

type dispatchCase struct {
	name  string
	env   map[string]string
	stdin string
	fail  error // what the called func returns
}

func conf(version, name string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":%q,"type":"berth-cni"}`, version, name)
}

func dispatchCases() []dispatchCase {
	full := func(cmd string, over map[string]string) map[string]string {
		env := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c-1.a_b", "CNI_NETNS": "/nonexistent/netns",
			"CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAME=p", "CNI_PATH": "/opt/cni/bin"}
		for k, v := range over {
			env[k] = v
		}
		return env
	}
	ok := conf("1.1.0", "aws-cni")
	var cs []dispatchCase
	add := func(name string, env map[string]string, stdin string, fail error) {
		cs = append(cs, dispatchCase{name, env, stdin, fail})
	}
	add("no command", map[string]string{}, ok, nil)
	add("no command, other vars", map[string]string{"CNI_PATH": "/x"}, ok, nil)
	add("version", map[string]string{"CNI_COMMAND": "VERSION"}, "", nil)
	add("unknown command", full("FOO", nil), ok, nil)
	for _, cmd := range []string{"ADD", "DEL", "CHECK", "GC", "STATUS"} {
		add(cmd, full(cmd, nil), ok, nil)
		add(cmd+" 1.0.0", full(cmd, nil), conf("1.0.0", "n"), nil)
		add(cmd+" 0.3.1", full(cmd, nil), conf("0.3.1", "n"), nil)
		add(cmd+" 0.4.0", full(cmd, nil), conf("0.4.0", "n"), nil)
		add(cmd+" no version", full(cmd, nil), `{"name":"n"}`, nil)
		add(cmd+" future version", full(cmd, nil), conf("9.9.9", "n"), nil)
		add(cmd+" bad version", full(cmd, nil), conf("x.y", "n"), nil)
		add(cmd+" missing everything", map[string]string{"CNI_COMMAND": cmd}, ok, nil)
		add(cmd+" missing path and ifname", full(cmd, map[string]string{"CNI_PATH": "", "CNI_IFNAME": ""}), ok, nil)
		add(cmd+" missing netns", full(cmd, map[string]string{"CNI_NETNS": ""}), ok, nil)
		add(cmd+" no containerID", full(cmd, map[string]string{"CNI_CONTAINERID": ""}), ok, nil)
		for _, id := range []string{"-abc", "a b", "_x", "ok-ID.9", "é"} {
			add(cmd+" containerID "+id, full(cmd, map[string]string{"CNI_CONTAINERID": id}), ok, nil)
		}
		for _, ifn := range []string{"0123456789abcdef", "012345678901234", ".", "..", "a/b", "a:b", "a b", "a\u00a0b", "a\u2003b", "a\u200bb", "a\u3000b", "eth\t0"} {
			add(cmd+" ifname "+ifn, full(cmd, map[string]string{"CNI_IFNAME": ifn}), ok, nil)
		}
		add(cmd+" not JSON", full(cmd, nil), "{", nil)
		add(cmd+" no name", full(cmd, nil), `{"cniVersion":"1.1.0"}`, nil)
		for _, n := range []string{"a b", "-a", "a-b.c_d", "ä"} {
			add(cmd+" name "+n, full(cmd, nil), conf("1.1.0", n), nil)
		}
		add(cmd+" plain error", full(cmd, nil), ok, errors.New("boom"))
		add(cmd+" CNI error", full(cmd, nil), ok, types.NewError(types.ErrTryAgainLater, "later", "details"))
		add(cmd+" own netns", full(cmd, map[string]string{"CNI_NETNS": "/proc/self/ns/net"}), ok, nil)
		add(cmd+" own netns, override", full(cmd, map[string]string{"CNI_NETNS": "/proc/self/ns/net", "CNI_NETNS_OVERRIDE": "true"}), ok, nil)
		add(cmd+" own netns, override 1", full(cmd, map[string]string{"CNI_NETNS": "/proc/self/ns/net", "CNI_NETNS_OVERRIDE": "1"}), ok, nil)
	}
	return cs
}

type outcome struct {
	Err            *types.Error
	Stdout, Stderr string
	Calls          []string
}

func recordFuncs(fail error, calls *[]string) (func(string) func(*cmdArgs) error, func(string) func(*skel.CmdArgs) error) {
	mine := func(cmd string) func(*cmdArgs) error {
		return func(a *cmdArgs) error {
			*calls = append(*calls, fmt.Sprintf("%s %+v", cmd, *a))
			return fail
		}
	}
	theirs := func(cmd string) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			*calls = append(*calls, fmt.Sprintf("%s %+v", cmd, cmdArgs(*a)))
			return fail
		}
	}
	return mine, theirs
}

func runSkel(t *testing.T, c dispatchCase) outcome {
	t.Helper()
	dir := t.TempDir()
	files := map[string]*os.File{}
	for _, n := range []string{"stdin", "stdout", "stderr"} {
		f, err := os.Create(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[n] = f
	}
	if _, err := files["stdin"].WriteString(c.stdin); err != nil {
		t.Fatal(err)
	}
	if _, err := files["stdin"].Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	oldIn, oldOut, oldErr := os.Stdin, os.Stdout, os.Stderr
	os.Stdin, os.Stdout, os.Stderr = files["stdin"], files["stdout"], files["stderr"]
	var o outcome
	_, theirs := recordFuncs(c.fail, &o.Calls)
	o.Err = skel.PluginMainFuncsWithError(skel.CNIFuncs{Add: theirs("ADD"), Del: theirs("DEL"), Check: theirs("CHECK"), GC: theirs("GC"), Status: theirs("STATUS")},
		cniversion.All, "about")
	os.Stdin, os.Stdout, os.Stderr = oldIn, oldOut, oldErr
	out, _ := os.ReadFile(files["stdout"].Name())
	errOut, _ := os.ReadFile(files["stderr"].Name())
	o.Stdout, o.Stderr = string(out), string(errOut)
	return o
}

func runMine(c dispatchCase) outcome {
	var o outcome
	mine, _ := recordFuncs(c.fail, &o.Calls)
	var out, errOut bytes.Buffer
	d := &dispatcher{getenv: os.Getenv, stdin: strings.NewReader(c.stdin), stdout: &out, stderr: &errOut}
	o.Err = d.run(cniFuncs{Add: mine("ADD"), Del: mine("DEL"), Check: mine("CHECK"), GC: mine("GC"), Status: mine("STATUS")}, cniversion.All, "about")
	o.Stdout, o.Stderr = out.String(), errOut.String()
	return o
}

func TestDispatcherMatchesSkel(t *testing.T) {
	vars := []string{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "CNI_NETNS_OVERRIDE"}
	for _, c := range dispatchCases() {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range vars {
				t.Setenv(v, c.env[v])
			}
			want, got := runSkel(t, c), runMine(c)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("dispatcher:\n%+v\nskel:\n%+v", got, want)
			}
		})
	}
}
