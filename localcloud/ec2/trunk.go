package ec2

// ENI trunking, as security groups for pods use it: a trunk ENI
// (InterfaceType trunk) attached to an instance carries branch ENIs
// (InterfaceType branch, never attached themselves), each on its own VLAN.
// The associations are kept and described; the datapath does not carry
// VLANs yet (see localcloud/README.md), so a branch's addresses are not
// delivered anywhere.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-io/berth/localcloud/awserr"
)

// Interface types CreateNetworkInterface accepts (without one, an ENI is
// of type "interface").
var interfaceTypes = []string{"efa", "efa-only", "branch", "trunk"}

func (s *Service) trunkHandlers() map[string]handler {
	return map[string]handler{
		"AssociateTrunkInterface":            s.associateTrunk,
		"DisassociateTrunkInterface":         s.disassociateTrunk,
		"DescribeTrunkInterfaceAssociations": s.describeTrunkAssociations,
	}
}

type xmlTrunkAssociation struct {
	AssociationID     string   `xml:"associationId"`
	BranchInterfaceID string   `xml:"branchInterfaceId"`
	TrunkInterfaceID  string   `xml:"trunkInterfaceId"`
	InterfaceProtocol string   `xml:"interfaceProtocol"`
	VlanID            int      `xml:"vlanId"`
	Tags              []xmlTag `xml:"tagSet>item"`
}

func renderTrunkAssociation(a *TrunkAssociation) xmlTrunkAssociation {
	return xmlTrunkAssociation{AssociationID: a.ID, BranchInterfaceID: a.BranchID, TrunkInterfaceID: a.TrunkID,
		InterfaceProtocol: "VLAN", VlanID: a.VlanID, Tags: renderTags(a.Tags)}
}

func trunkAssociationNotFound(id string) error {
	return awserr.BadRequest("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
}

// interfaceOfType finds the ENI named by param and checks its type.
func (s *Service) interfaceOfType(req *Request, param, typ string) (*ENI, error) {
	e, err := s.lookupENIParam(req.Params, param)
	if err != nil {
		return nil, err
	}
	if e.InterfaceType != typ {
		return nil, awserr.InvalidParameterValue("%s %s is of type %s, not %s", param, e.ID, e.InterfaceType, typ)
	}
	return e, nil
}

func (s *Service) associateTrunk(ctx context.Context, req *Request) (any, error) {
	p := req.Params
	token := p.Get("ClientToken")
	out := func(a *TrunkAssociation) any {
		return struct {
			Association xmlTrunkAssociation `xml:"interfaceAssociation"`
			ClientToken string              `xml:"clientToken,omitempty"`
		}{renderTrunkAssociation(a), token}
	}
	if id := s.idempotent(req.Action, token); id != "" {
		if a := s.st.TrunkAssociations[id]; a != nil {
			return out(a), nil
		}
	}
	branch, err := s.interfaceOfType(req, "BranchInterfaceId", "branch")
	if err != nil {
		return nil, err
	}
	trunk, err := s.interfaceOfType(req, "TrunkInterfaceId", "trunk")
	if err != nil {
		return nil, err
	}
	if p.Has("GreKey") {
		return nil, awserr.InvalidParameterValue("GRE trunking is not supported; use VlanId")
	}
	vlan, err := p.Int("VlanId", 0)
	if err != nil {
		return nil, err
	}
	switch {
	case vlan < 1 || vlan > 4094:
		return nil, awserr.InvalidParameterValue("VlanId %d is out of range (1-4094)", vlan)
	case branch.VPCID != trunk.VPCID || branch.AZ != trunk.AZ:
		return nil, awserr.InvalidParameterValue("Branch interface %s and trunk interface %s must be in the same VPC and availability zone.", branch.ID, trunk.ID)
	case branch.Attachment != nil:
		return nil, eniInUse(branch.ID)
	}
	for _, a := range s.st.TrunkAssociations {
		if a.BranchID == branch.ID {
			return nil, awserr.InvalidParameterValue("Branch interface %s is already associated (%s)", branch.ID, a.ID)
		}
		if a.TrunkID == trunk.ID && a.VlanID == vlan {
			return nil, awserr.InvalidParameterValue("VlanId %d is already in use on trunk interface %s", vlan, trunk.ID)
		}
	}
	a := &TrunkAssociation{ID: newID("trunk-assoc"), BranchID: branch.ID, TrunkID: trunk.ID, VlanID: vlan, Tags: Tags{}}
	s.st.TrunkAssociations[a.ID] = a
	if err := s.hooks.TrunkChanged(ctx, trunk); err != nil {
		delete(s.st.TrunkAssociations, a.ID)
		s.trunkRollback(ctx, trunk)
		return nil, fmt.Errorf("datapath: trunk %s: %w", trunk.ID, err)
	}
	s.rememberToken(req.Action, token, a.ID)
	s.markDirty()
	return out(a), nil
}

// trunkRollback tells the datapath the trunk's associations are back as
// they were.
func (s *Service) trunkRollback(ctx context.Context, trunk *ENI) {
	if err := s.hooks.TrunkChanged(ctx, trunk); err != nil {
		s.log.Error("datapath: restore trunk", "eni", trunk.ID, "err", err)
	}
}

func (s *Service) disassociateTrunk(ctx context.Context, req *Request) (any, error) {
	id, err := req.Params.Required("AssociationId")
	if err != nil {
		return nil, err
	}
	a := s.st.TrunkAssociations[id]
	if a == nil {
		return nil, trunkAssociationNotFound(id)
	}
	delete(s.st.TrunkAssociations, id)
	if trunk := s.st.ENIs[a.TrunkID]; trunk != nil {
		if err := s.hooks.TrunkChanged(ctx, trunk); err != nil {
			s.st.TrunkAssociations[id] = a
			s.trunkRollback(ctx, trunk)
			return nil, fmt.Errorf("datapath: trunk %s: %w", trunk.ID, err)
		}
	}
	s.markDirty()
	return struct {
		Return      bool   `xml:"return"`
		ClientToken string `xml:"clientToken,omitempty"`
	}{true, req.Params.Get("ClientToken")}, nil
}

func trunkAssociationFilter(a *TrunkAssociation) getter {
	return func(name string) ([]string, bool) {
		switch name {
		case "association-id":
			return one(a.ID), true
		case "branch-interface-id":
			return one(a.BranchID), true
		case "trunk-interface-association.trunk-interface-id", "trunk-interface-id":
			return one(a.TrunkID), true
		case "trunk-interface-association.branch-interface-id":
			return one(a.BranchID), true
		case "vlan-id":
			return one(strconv.Itoa(a.VlanID)), true
		case "interface-protocol":
			return one("VLAN"), true
		case "gre-key":
			return nil, true // VLAN associations have none
		}
		return nil, false
	}
}

func (s *Service) describeTrunkAssociations(ctx context.Context, req *Request) (any, error) {
	filters, err := req.Params.Filters()
	if err != nil {
		return nil, err
	}
	if err := validateFilters(filters, trunkAssociationFilter(&TrunkAssociation{})); err != nil {
		return nil, err
	}
	want, byID := ids(req.Params, "AssociationId")
	if byID && req.Params.Has("MaxResults") {
		return nil, awserr.InvalidParameterCombination("The parameter AssociationIds cannot be used with the parameter MaxResults")
	}
	var list []*TrunkAssociation
	for _, a := range s.st.TrunkAssociations {
		if (!byID || want[a.ID]) && matches(filters, a.Tags, trunkAssociationFilter(a)) {
			list = append(list, a)
		}
	}
	page, next, err := paginate(list, req.Params, func(a *TrunkAssociation) string { return a.ID }, 5, 255)
	if err != nil {
		return nil, err
	}
	out := struct {
		Associations []xmlTrunkAssociation `xml:"interfaceAssociationSet>item"`
		NextToken    string                `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, a := range page {
		out.Associations = append(out.Associations, renderTrunkAssociation(a))
	}
	return out, nil
}

// dropTrunkAssociations forgets the associations of an ENI that goes
// away, as a trunk or as a branch, and returns the trunks they were on.
func (s *Service) dropTrunkAssociations(eniID string) []*ENI {
	var trunks []*ENI
	for id, a := range s.st.TrunkAssociations {
		if a.BranchID != eniID && a.TrunkID != eniID {
			continue
		}
		delete(s.st.TrunkAssociations, id)
		if t := s.st.ENIs[a.TrunkID]; t != nil && a.TrunkID != eniID && !slices.Contains(trunks, t) {
			trunks = append(trunks, t)
		}
	}
	return trunks
}

// validInterfaceType checks CreateNetworkInterface's InterfaceType.
func validInterfaceType(typ string) error {
	if typ == "" || slices.Contains(interfaceTypes, typ) {
		return nil
	}
	return awserr.InvalidParameterValue("Value (%s) for parameter InterfaceType is invalid. Valid values: %s", typ, strings.Join(interfaceTypes, ", "))
}
