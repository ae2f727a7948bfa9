package main

// The CNI dispatcher: what github.com/containernetworking/cni/pkg/skel
// (v1.3.0) does, rewritten here because skel's package pulls in
// pkg/utils, whose package initialisation compiles a regular expression
// and with it the regexp and unicode tables: about 30 page faults and 1–2 ms
// of CPU in every exec of the plugin on our hosts, before main runs, for
// a check of a few characters. Behaviour, errors and their order are
// skel's; skel_test.go runs both on the same inputs and compares.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netns"
)

// cmdArgs is skel.CmdArgs: the CNI_* environment and the configuration.
type cmdArgs struct {
	ContainerID   string
	Netns         string
	IfName        string
	Args          string
	Path          string
	NetnsOverride string
	StdinData     []byte
}

type cniFuncs struct {
	Add, Del, Check, GC, Status func(*cmdArgs) error
}

type dispatcher struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// pluginMain runs the command named by CNI_COMMAND; the caller prints a
// returned error as JSON on stdout and exits 1.
func pluginMain(funcs cniFuncs, info version.PluginInfo, about string) *types.Error {
	return (&dispatcher{getenv: os.Getenv, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}).run(funcs, info, about)
}

// envVars are the CNI_* variables, the commands that need each, and their
// checks (skel's table).
var envVars = []struct {
	name        string
	requiredFor []string
	validate    func(string) *types.Error
}{
	{"CNI_COMMAND", []string{"ADD", "CHECK", "DEL", "GC", "STATUS"}, nil},
	{"CNI_CONTAINERID", []string{"ADD", "CHECK", "DEL"}, validateContainerID},
	{"CNI_NETNS", []string{"ADD", "CHECK"}, nil},
	{"CNI_IFNAME", []string{"ADD", "CHECK", "DEL"}, validateInterfaceName},
	{"CNI_ARGS", nil, nil},
	{"CNI_PATH", []string{"ADD", "CHECK", "DEL", "GC", "STATUS"}, nil},
	{"CNI_NETNS_OVERRIDE", nil, nil},
}

func (t *dispatcher) cmdArgsFromEnv() (string, *cmdArgs, *types.Error) {
	vals := make([]string, len(envVars))
	cmd := t.getenv("CNI_COMMAND")
	var missing []string
	for i, v := range envVars {
		vals[i] = t.getenv(v.name)
		required := false
		for _, c := range v.requiredFor {
			required = required || c == cmd
		}
		if vals[i] == "" {
			if required || v.name == "CNI_COMMAND" {
				missing = append(missing, v.name)
			}
		} else if required && v.validate != nil {
			if err := v.validate(vals[i]); err != nil {
				return "", nil, err
			}
		}
	}
	if len(missing) > 0 {
		return "", nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("required env variables [%s] missing", strings.Join(missing, ",")), "")
	}
	var stdin []byte
	if cmd != "VERSION" {
		var err error
		if stdin, err = io.ReadAll(t.stdin); err != nil {
			return "", nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("error reading from stdin: %v", err), "")
		}
		if err := validateConfigName(stdin); err != nil {
			return "", nil, err
		}
	}
	return cmd, &cmdArgs{ContainerID: vals[1], Netns: vals[2], IfName: vals[3], Args: vals[4], Path: vals[5],
		NetnsOverride: vals[6], StdinData: stdin}, nil
}

func (t *dispatcher) checkVersionAndCall(args *cmdArgs, info version.PluginInfo, call func(*cmdArgs) error) *types.Error {
	confVersion, err := (&version.ConfigDecoder{}).Decode(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if verErr := (&version.Reconciler{}).Check(confVersion, info); verErr != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions", verErr.Details())
	}
	if call == nil {
		return nil
	}
	if err := call(args); err != nil {
		var e *types.Error
		if errors.As(err, &e) {
			return e
		}
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	return nil
}

// checkSinceVersion runs call for CHECK (0.4.0), GC and STATUS (1.1.0)
// when the configuration's and the plugin's versions allow it.
func (t *dispatcher) checkSinceVersion(args *cmdArgs, info version.PluginInfo, cmd, since string, call func(*cmdArgs) error) *types.Error {
	confVersion, err := (&version.ConfigDecoder{}).Decode(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if ok, err := version.GreaterThanOrEqualTo(confVersion, since); err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	} else if !ok {
		return types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow "+cmd, "")
	}
	for _, pv := range info.SupportedVersions() {
		ok, err := version.GreaterThanOrEqualTo(pv, confVersion)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		}
		if ok {
			return t.checkVersionAndCall(args, info, call)
		}
	}
	return types.NewError(types.ErrIncompatibleCNIVersion, "plugin version does not allow "+cmd, "")
}

func (t *dispatcher) run(funcs cniFuncs, info version.PluginInfo, about string) *types.Error {
	cmd, args, err := t.cmdArgsFromEnv()
	if err != nil {
		// Without a command, say what this is.
		if err.Code == types.ErrInvalidEnvironmentVariables && t.getenv("CNI_COMMAND") == "" && about != "" {
			_, _ = fmt.Fprintln(t.stderr, about)
			_, _ = fmt.Fprintf(t.stderr, "CNI protocol versions supported: %s\n", strings.Join(info.SupportedVersions(), ", "))
			return nil
		}
		return err
	}
	switch cmd {
	case "ADD", "DEL":
		call := funcs.Add
		if cmd == "DEL" {
			call = funcs.Del
		}
		if err := t.checkVersionAndCall(args, info, call); err != nil {
			return err
		}
		if strings.ToUpper(args.NetnsOverride) != "TRUE" && args.NetnsOverride != "1" {
			if same, err := isPluginNetNS(args.Netns); err != nil {
				return err
			} else if same {
				return types.NewError(types.ErrInvalidNetNS, "plugin's netns and netns from CNI_NETNS should not be the same", "")
			}
		}
		return nil
	case "CHECK":
		return t.checkSinceVersion(args, info, cmd, "0.4.0", funcs.Check)
	case "GC":
		return t.checkSinceVersion(args, info, cmd, "1.1.0", funcs.GC)
	case "STATUS":
		return t.checkSinceVersion(args, info, cmd, "1.1.0", funcs.Status)
	case "VERSION":
		if err := info.Encode(t.stdout); err != nil {
			return types.NewError(types.ErrIOFailure, err.Error(), "")
		}
		return nil
	default:
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND: %v", cmd), "")
	}
}

// isPluginNetNS is cni/pkg/ns.CheckNetNS: a path that cannot be opened is
// not the plugin's namespace (DEL of an already deleted one).
func isPluginNetNS(path string) (bool, *types.Error) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return false, nil
	}
	defer target.Close()
	own, err := netns.Get()
	if err != nil {
		return false, types.NewError(types.ErrInvalidNetNS, "get plugin's netns failed", "")
	}
	defer own.Close()
	return target.Equal(own), nil
}

// validateConfigName is skel's check of the configuration's "name".
func validateConfigName(b []byte) *types.Error {
	var conf struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("error unmarshall network config: %v", err), "")
	}
	if conf.Name == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, "missing network name", "")
	}
	if !validName(conf.Name) {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid characters found in network name", conf.Name)
	}
	return nil
}

// validName is CNI's ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ for container IDs and
// network names.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

func validateContainerID(id string) *types.Error {
	if id == "" {
		return types.NewError(types.ErrUnknownContainer, "missing containerID", "")
	}
	if !validName(id) {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid characters in containerID", id)
	}
	return nil
}

// validateInterfaceName is the kernel's rule (net/core/dev.c), as CNI checks it.
func validateInterfaceName(name string) *types.Error {
	const maxLen = 15
	if len(name) == 0 {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "interface name is empty", "")
	}
	if len(name) > maxLen {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "interface name is too long", fmt.Sprintf("interface name should be less than %d characters", maxLen+1))
	}
	if name == "." || name == ".." {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "interface name is . or ..", "")
	}
	for _, r := range bytes.Runes([]byte(name)) {
		if r == '/' || r == ':' || unicode.IsSpace(r) {
			return types.NewError(types.ErrInvalidEnvironmentVariables, "interface name contains / or : or whitespace characters", "")
		}
	}
	return nil
}
