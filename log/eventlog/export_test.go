package eventlog_test

import "github.com/twmb/franz-go/pkg/kadm"

type kadmOffset = kadm.OffsetResponse
