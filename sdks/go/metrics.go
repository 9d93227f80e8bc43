package ork

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// MaxMetrics is the most metrics one attempt may record.
const MaxMetrics = 64

var metricName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$`)

// Metrics are the figures a task records for its attempt (rows processed,
// bytes, a score): ctx.Metrics.Record("rows", 1200). They travel with the
// attempt's report and show in `ork run status`, the run record, the mirror
// and the server's /metrics. Safe for concurrent use.
type Metrics struct {
	mu     sync.Mutex
	values map[string]float64
}

// Record keeps value under name; recording a name again replaces its value.
// A name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter
// or '_'; the value must be finite.
func (m *Metrics) Record(name string, value float64) error {
	if !metricName.MatchString(name) {
		return fmt.Errorf("metric name %q: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or '_'", name)
	}
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return fmt.Errorf("metric %q: the value must be a finite number", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.values == nil {
		m.values = map[string]float64{}
	}
	if _, ok := m.values[name]; !ok && len(m.values) >= MaxMetrics {
		return fmt.Errorf("metric %q: an attempt records at most %d metrics", name, MaxMetrics)
	}
	m.values[name] = value
	return nil
}

// Snapshot returns what was recorded so far.
func (m *Metrics) Snapshot() map[string]float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]float64, len(m.values))
	for k, v := range m.values {
		out[k] = v
	}
	return out
}

// metricsFile renders values as the ORK_METRICS file: `name value` lines.
func metricsFile(values map[string]float64) string {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		b.WriteString(name)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(values[name], 'g', -1, 64))
		b.WriteByte('\n')
	}
	return b.String()
}
