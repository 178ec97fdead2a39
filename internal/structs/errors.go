package structs

import "errors"

// BadRequestError is bad input: the HTTP API answers 400 with Reason.
type BadRequestError struct{ Reason string }

func (e BadRequestError) Error() string { return e.Reason }

// NotFoundError is a missing resource: the HTTP API answers 404 with Reason.
type NotFoundError struct{ Reason string }

func (e NotFoundError) Error() string { return e.Reason }

// IsBadRequest reports whether err is a BadRequestError.
func IsBadRequest(err error) bool {
	var b BadRequestError
	return errors.As(err, &b)
}

// IsNotFound reports whether err is a NotFoundError.
func IsNotFound(err error) bool {
	var n NotFoundError
	return errors.As(err, &n)
}
