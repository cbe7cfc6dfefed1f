package delivery

import "errors"

// ErrUnknownEndpoint is the failure of a job whose endpoint target does not
// exist (it was deleted): the job is dead-lettered, not retried.
var ErrUnknownEndpoint = errors.New("unknown endpoint")
