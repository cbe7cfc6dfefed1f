package worker_test

import (
	"testing"

	"github.com/sluicehq/sluice/internal/devtest"
)

func TestMain(m *testing.M) { devtest.Main(m) }
