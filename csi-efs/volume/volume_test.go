package volume

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ID
		str  string
	}{
		{"fs-0123abcd", ID{FileSystemID: "fs-0123abcd"}, "fs-0123abcd"},
		{"fs-0123abcd:/data", ID{FileSystemID: "fs-0123abcd", SubPath: "/data"}, "fs-0123abcd:/data"},
		{"fs-0123abcd:/data/", ID{FileSystemID: "fs-0123abcd", SubPath: "/data"}, "fs-0123abcd:/data"},
		{"fs-0123abcd:/", ID{FileSystemID: "fs-0123abcd"}, "fs-0123abcd"},
		{"fs-0123abcd::fsap-0456abcdef", ID{FileSystemID: "fs-0123abcd", AccessPointID: "fsap-0456abcdef"}, "fs-0123abcd::fsap-0456abcdef"},
		{"fs-0123abcd:/a/b:fsap-0456abcdef", ID{FileSystemID: "fs-0123abcd", SubPath: "/a/b", AccessPointID: "fsap-0456abcdef"}, "fs-0123abcd:/a/b:fsap-0456abcdef"},
		{"efs:fs-0123abcd::fsap-0456abcdef", ID{FileSystemID: "fs-0123abcd", AccessPointID: "fsap-0456abcdef"}, "fs-0123abcd::fsap-0456abcdef"},
		{"efs:fs-0123abcd", ID{FileSystemID: "fs-0123abcd"}, "fs-0123abcd"},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if got.String() != tc.str {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got.String(), tc.str)
		}
		if again, err := Parse(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q: %+v, %v", tc.in, again, err)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	for _, in := range []string{"", "fake-vol-id", "fs-xyz", "vol-0123abcd", "fs-0123abcd:data", "fs-0123abcd:/../etc",
		"fs-0123abcd::ap-1", "fs-0123abcd::fsap-0456abcdef:x", "fs-0123abcd:/a:fsap-zz"} {
		if _, err := Parse(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", in, err)
		}
	}
}

func TestSource(t *testing.T) {
	if s := (ID{FileSystemID: "fs-0123abcd"}).Source(); s != "fs-0123abcd:/" {
		t.Errorf("Source = %q", s)
	}
	if s := (ID{FileSystemID: "fs-0123abcd", SubPath: "/x"}).Source(); s != "fs-0123abcd:/x" {
		t.Errorf("Source = %q", s)
	}
}
