package server

import (
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{DataDir: "/tmp/x", ClusterName: "prod-1", Listen: "127.0.0.1:6443", EKSListen: "127.0.0.1:4567",
		AuthenticationMode: "API", ServiceCIDR: "10.100.0.0/16"}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c = Config{ClusterName: "-bad name", Listen: "nope", EKSListen: "127.0.0.1:99999", AuthenticationMode: "LDAP",
		ServiceCIDR: "fd00::/64", LogTypes: []string{"kernel"}, EtcdServers: []string{"etcd:2379"}, AdvertiseAddress: "host"}
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"--data-dir", "--cluster-name", "--listen", "--eks-listen", "--authentication-mode", "--service-cidr", "--log-types", "--etcd-servers", "--advertise-address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestFirstServiceIPAndClusterID(t *testing.T) {
	ip, err := firstServiceIP("10.100.0.0/16")
	if err != nil || ip.String() != "10.100.0.1" {
		t.Fatalf("%v %v", ip, err)
	}
	a, b := clusterID("1", "us-west-2", "c"), clusterID("1", "us-west-2", "d")
	if len(a) != 32 || a == b || a != clusterID("1", "us-west-2", "c") {
		t.Fatalf("cluster ids %s %s", a, b)
	}
}
