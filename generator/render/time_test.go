package render

import (
	"testing"
	"time"
)

func mustTime(t *testing.T) time.Time {
	t.Helper()
	return time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
}
