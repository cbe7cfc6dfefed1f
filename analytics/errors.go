package analytics

import "errors"

// ErrNotFound is returned for a job the audit trail holds no event of.
var ErrNotFound = errors.New("no such job in the audit trail")

// FieldError is bad input in one field of a query.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }
