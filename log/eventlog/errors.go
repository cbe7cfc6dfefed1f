package eventlog

import "errors"

// ErrClosed is returned by an Appender or Runner used after Close/Stop.
var ErrClosed = errors.New("eventlog: closed")

// ErrTxnAborted is returned when a transaction was aborted (a rebalance or a
// broker error); none of its records became visible.
var ErrTxnAborted = errors.New("transaction aborted")
