package cloud

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// TestMetrics runs the SDK against a server answering FileSystemNotFound
// and checks the duration and error series.
func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-amzn-ErrorType", "FileSystemNotFound")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"ErrorCode":"FileSystemNotFound","Message":"File system 'fs-0123abcd' does not exist."}`))
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	client := efs.New(efs.Options{Region: "us-west-2", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""), APIOptions: []func(*middleware.Stack) error{m.apiOption}})
	c := New(client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := c.FileSystem(context.Background(), "fs-0123abcd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FileSystem: %v, want ErrNotFound", err)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("DescribeFileSystems", "FileSystemNotFound")); got != 1 {
		t.Errorf("errors{DescribeFileSystems,FileSystemNotFound} = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("duration series: %d, want 1", n)
	}
}
