package ec2

// ENI operations beyond create/describe. (Being filled in.)

func (s *Service) eniHandlers() map[string]handler {
	return map[string]handler{
		"CreateNetworkInterface":    s.createENI,
		"DescribeNetworkInterfaces": s.describeENIs,
	}
}
