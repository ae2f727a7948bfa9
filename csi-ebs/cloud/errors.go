package cloud

import (
	"errors"
	"fmt"

	"github.com/aws/smithy-go"
)

// Sentinels of the cloud boundary. EC2 error codes are translated into
// them once, in translate; the driver maps them to gRPC codes in one switch.
var (
	ErrNotFound           = errors.New("not found")
	ErrIdempotentMismatch = errors.New("client token already used with other parameters")
	ErrAttachLimit        = errors.New("attachment limit exceeded")
	ErrInUse              = errors.New("in use")
	ErrBusy               = errors.New("resource busy")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrThrottled          = errors.New("throttled")
)

var codeSentinel = map[string]error{
	"InvalidVolume.NotFound":                ErrNotFound,
	"InvalidVolumeID.Malformed":             ErrNotFound,
	"InvalidSnapshot.NotFound":              ErrNotFound,
	"InvalidSnapshotID.Malformed":           ErrNotFound,
	"InvalidInstanceID.NotFound":            ErrNotFound,
	"InvalidInstanceID.Malformed":           ErrNotFound,
	"IdempotentParameterMismatch":           ErrIdempotentMismatch,
	"AttachmentLimitExceeded":               ErrAttachLimit,
	"VolumeLimitExceeded":                   ErrAttachLimit,
	"VolumeInUse":                           ErrInUse,
	"IncorrectModificationState":            ErrBusy,
	"IncorrectState":                        ErrBusy,
	"IncorrectInstanceState":                ErrBusy,
	"InvalidParameterValue":                 ErrInvalidArgument,
	"InvalidParameterCombination":           ErrInvalidArgument,
	"InvalidParameterDependency":            ErrInvalidArgument,
	"MissingParameter":                      ErrInvalidArgument,
	"InvalidVolume.ZoneMismatch":            ErrInvalidArgument,
	"UnsupportedOperation":                  ErrInvalidArgument,
	"RequestLimitExceeded":                  ErrThrottled,
	"Throttling":                            ErrThrottled,
	"ThrottlingException":                   ErrThrottled,
	"InsufficientVolumeCapacity":            ErrBusy,
	"InvalidAvailabilityZone":               ErrInvalidArgument,
	"InvalidZone.NotFound":                  ErrInvalidArgument,
	"SnapshotCreationPerVolumeRateExceeded": ErrThrottled,
}

// errorCode returns the AWS error code of err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// translate wraps an SDK error with its sentinel, keeping the original.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if s, ok := codeSentinel[errorCode(err)]; ok {
		return fmt.Errorf("%s: %w: %w", op, s, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
