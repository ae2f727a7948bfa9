package ec2

import (
	"context"
	"time"
)

// EBS: volumes, attachments and snapshots. (Being filled in.)

func (s *Service) ebsHandlers() map[string]handler { return map[string]handler{} }

func (s *Service) settleEBS(ctx context.Context, now time.Time) {}
