package cloud

import (
	"errors"
	"testing"

	"github.com/aws/smithy-go"
)

func TestTranslate(t *testing.T) {
	for code, want := range map[string]error{
		"FileSystemNotFound":                ErrNotFound,
		"AccessPointNotFound":               ErrNotFound,
		"AccessPointAlreadyExists":          ErrAlreadyExists,
		"AccessPointLimitExceeded":          ErrLimit,
		"BadRequest":                        ErrInvalid,
		"ThrottlingException":               ErrThrottled,
		"IncorrectFileSystemLifeCycleState": ErrBusy,
	} {
		err := translate("op", &smithy.GenericAPIError{Code: code, Message: "m"})
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", code, err, want)
		}
		var api smithy.APIError
		if !errors.As(err, &api) || api.ErrorCode() != code {
			t.Errorf("%s: the AWS error is lost from the chain: %v", code, err)
		}
	}
	if err := translate("op", &smithy.GenericAPIError{Code: "InternalServerError"}); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("unknown code: %v", err)
	}
	if translate("op", nil) != nil {
		t.Error("nil error translated to non-nil")
	}
}
