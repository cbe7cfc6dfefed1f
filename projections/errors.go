package projections

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned for a job that does not exist in the caller's
// tenant, including a job id that belongs to another tenant.
var ErrNotFound = errors.New("projections: job not found")

// ErrEpochChanged is returned by Store.Apply when the read model was
// flushed or rebuilt since the store last looked: nothing of the batch was
// written, and the caller must re-read the log from the stored checkpoints.
var ErrEpochChanged = errors.New("projections: read model was reset")

// ErrRebuilding is returned while Store.Rebuild is emptying the read model.
var ErrRebuilding = errors.New("projections: read model is being rebuilt")

// FieldError is a bad query argument. Field is the argument's protobuf
// JSON name ("pageToken"), so API handlers can name it to the client.
type FieldError struct {
	// Field names the argument: "pageSize", "pageToken", "state".
	Field string
	// Reason says what is wrong with it, fit for the client.
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("projections: invalid %s: %s", e.Field, e.Reason)
}
