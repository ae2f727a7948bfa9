package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// MetadataENIs reads what ENABLE_IMDS_ONLY_MODE needs to manage ENIs from
// IMDS alone: addresses, prefixes, the subnet and the network card (ENIs
// on other cards are not ipamd's).
func TestMetadataENIs(t *testing.T) {
	p0 := "network/interfaces/macs/0a:00:00:00:00:01/"
	p1 := "network/interfaces/macs/0a:00:00:00:00:02/"
	md := fakeIMDS{"instance-id": "i-1", "instance-type": "m5.large", "placement/availability-zone": "us-west-2a",
		"mac": "0a:00:00:00:00:01", "local-ipv4": "10.0.0.10", "network/interfaces/macs/": "0a:00:00:00:00:01/\n0a:00:00:00:00:02/",
		p0 + "interface-id": "eni-1", p0 + "device-number": "0", p0 + "network-card": "0", p0 + "subnet-id": "subnet-1",
		p0 + "vpc-id": "vpc-1", p0 + "subnet-ipv4-cidr-block": "10.0.0.0/16", p0 + "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
		p0 + "security-group-ids": "sg-1", p0 + "local-ipv4s": "10.0.0.10\n10.0.0.11", p0 + "ipv4-prefix": "10.0.4.0/28",
		p1 + "interface-id": "eni-2", p1 + "device-number": "0", p1 + "network-card": "1", p1 + "subnet-id": "subnet-2",
		p1 + "subnet-ipv4-cidr-block": "10.1.0.0/16", p1 + "local-ipv4s": "10.1.0.5"}
	c, err := New(context.Background(), &fakeEC2{}, md, "us-west-2", slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	enis, err := c.MetadataENIs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(enis) != 2 {
		t.Fatalf("%d ENIs: %+v", len(enis), enis)
	}
	got := fmt.Sprintf("%s card %d subnet %s %s primary %s secondary %v prefixes %v", enis[0].ID, enis[0].Card, enis[0].SubnetID,
		enis[0].SubnetCIDR, enis[0].PrimaryIP, enis[0].Secondary, enis[0].Prefixes)
	if want := "eni-1 card 0 subnet subnet-1 10.0.0.0/16 primary 10.0.0.10 secondary [10.0.0.11] prefixes [10.0.4.0/28]"; got != want {
		t.Errorf("primary ENI: %s, want %s", got, want)
	}
	if e := enis[1]; e.ID != "eni-2" || e.Card != 1 || e.SubnetCIDR != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("ENI on card 1: %+v", e)
	}
}
