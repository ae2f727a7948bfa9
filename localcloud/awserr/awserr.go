// Package awserr is the error every localcloud handler returns: an AWS error
// code, a message in AWS's wording and the HTTP status AWS uses for it. Each
// protocol front-end (EC2 Query XML, STS Query XML, REST-JSON) renders it in
// its own wire format.
package awserr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an AWS API error.
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// New returns an error with code and a formatted message. Status defaults to
// 400 (client errors are the rule in EC2).
func New(status int, code, format string, args ...any) *Error {
	if status == 0 {
		status = http.StatusBadRequest
	}
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// BadRequest is New(400, ...).
func BadRequest(code, format string, args ...any) *Error {
	return New(http.StatusBadRequest, code, format, args...)
}

// As extracts an *Error from err; anything else becomes InternalError (500),
// which tests treat as a bug.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: "InternalError", Message: "An internal error has occurred: " + err.Error(), Status: http.StatusInternalServerError}
}

// Common errors shared by several services.
func MissingParameter(name string) *Error {
	return BadRequest("MissingParameter", "The request must contain the parameter %s", name)
}

func InvalidParameterValue(format string, args ...any) *Error {
	return BadRequest("InvalidParameterValue", format, args...)
}

func Throttled() *Error {
	return New(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded.")
}

func InvalidParameterCombination(format string, args ...any) *Error {
	return BadRequest("InvalidParameterCombination", format, args...)
}

func InvalidParameterDependency(format string, args ...any) *Error {
	return BadRequest("InvalidParameterDependency", format, args...)
}
