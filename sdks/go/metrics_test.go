package ork

import (
	"math"
	"strings"
	"testing"
)

func TestMetricsAreCheckedAndTheLastValueWins(t *testing.T) {
	var m Metrics
	for _, err := range []error{m.Record("rows", 1200), m.Record("rows", 1300), m.Record("score", 0.5)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Snapshot(); len(got) != 2 || got["rows"] != 1300 || got["score"] != 0.5 {
		t.Errorf("snapshot = %v", got)
	}
	for _, bad := range []string{"has space", "9lives", strings.Repeat("x", 65), ""} {
		if m.Record(bad, 1) == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	if m.Record("nan", math.NaN()) == nil {
		t.Error("NaN was accepted")
	}
	if got := metricsFile(m.Snapshot()); got != "rows 1300\nscore 0.5\n" {
		t.Errorf("file = %q", got)
	}
}
