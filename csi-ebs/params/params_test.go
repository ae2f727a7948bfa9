package params

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseCreate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      map[string]string
		wantErr bool
		check   func(t *testing.T, c Create)
	}{
		{name: "defaults", in: nil, check: func(t *testing.T, c Create) {
			if c.Type != "gp3" || c.FSType != "" || len(c.Tags) != 0 {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "case-insensitive keys", in: map[string]string{"TYPE": "io2", "IOPS": "5000", "Encrypted": "true", "KmsKeyId": "arn:k"}, check: func(t *testing.T, c Create) {
			if c.Type != "io2" || c.IOPS != 5000 || !c.Encrypted || c.KMSKeyID != "arn:k" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "unknown key", in: map[string]string{"colour": "blue"}, wantErr: true},
		{name: "iops and iopsPerGB", in: map[string]string{"type": "io1", "iops": "100", "iopsPerGB": "10"}, wantErr: true},
		{name: "iops on gp2", in: map[string]string{"type": "gp2", "iops": "100"}, wantErr: true},
		{name: "throughput on io1", in: map[string]string{"type": "io1", "throughput": "200"}, wantErr: true},
		{name: "bad type", in: map[string]string{"type": "gp9"}, wantErr: true},
		{name: "kms without encryption", in: map[string]string{"kmsKeyId": "k"}, wantErr: true},
		{name: "bad fstype", in: map[string]string{"csi.storage.k8s.io/fstype": "btrfs"}, wantErr: true},
		{name: "xfs inode count", in: map[string]string{"csi.storage.k8s.io/fstype": "xfs", "numberOfInodes": "100"}, wantErr: true},
		{name: "negative iops", in: map[string]string{"iops": "-1"}, wantErr: true},
		{name: "tags", in: map[string]string{"tagSpecification_1": "team=storage", "TagSpecification_2": "cost = 42", "csi.storage.k8s.io/pvc/name": "data"}, check: func(t *testing.T, c Create) {
			want := map[string]string{"team": "storage", "cost": "42", tagPVCName: "data"}
			if !reflect.DeepEqual(c.Tags, want) {
				t.Errorf("tags %v, want %v", c.Tags, want)
			}
		}},
		{name: "bad tag", in: map[string]string{"tagSpecification_1": "novalue"}, wantErr: true},
		{name: "reserved tag", in: map[string]string{"tagSpecification_1": "aws:x=1"}, wantErr: true},
		{name: "format", in: map[string]string{"blockSize": "4096", "inodeSize": "512", "bytesPerInode": "8192", "numberOfInodes": "1000"}, check: func(t *testing.T, c Create) {
			got := c.Format.MkfsArgs("ext4")
			want := []string{"-b", "4096", "-I", "512", "-i", "8192", "-N", "1000"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("mkfs args %v, want %v", got, want)
			}
			f, err := FormatFromContext(c.VolumeContext())
			if err != nil || f != c.Format {
				t.Errorf("round trip %+v %v", f, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCreate(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestIOPSFor(t *testing.T) {
	for _, tc := range []struct {
		in      map[string]string
		size    int32
		want    int32
		wantErr bool
	}{
		{map[string]string{"type": "io1", "iopsPerGB": "50"}, 10, 500, false},
		{map[string]string{"type": "io1", "iopsPerGB": "50"}, 10000, 64000, false},
		{map[string]string{"type": "io1", "iopsPerGB": "5"}, 10, 0, true},
		{map[string]string{"type": "io1", "iopsPerGB": "5", "allowAutoIOPSPerGBIncrease": "true"}, 10, 100, false},
		{map[string]string{"type": "gp3"}, 10, 0, false},
		{map[string]string{"type": "gp3", "iops": "4000"}, 10, 4000, false},
	} {
		c, err := ParseCreate(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.IOPSFor(tc.size)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%v size %d: got %d, %v; want %d (err %t)", tc.in, tc.size, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseModify(t *testing.T) {
	m, err := ParseModify(map[string]string{"Type": "io2", "iops": "4000", "tagSpecification_1": "a=b"})
	if err != nil || m.Type != "io2" || m.IOPS != 4000 || m.Tags["a"] != "b" {
		t.Fatalf("got %+v %v", m, err)
	}
	if _, err := ParseModify(map[string]string{"XXX_FakeKey": "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown key: %v", err)
	}
	if m, _ := ParseModify(nil); !m.Empty() {
		t.Fatal("empty modify not empty")
	}
}
