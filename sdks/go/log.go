package ork

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// logSink receives one finished log line and the stream it belongs to
// ("stdout" or "stderr").
type logSink func(stream, line string)

// newTaskLogger returns a logger whose records become lines of sink: Warn and
// above on stderr, the rest on stdout, like a process's own output. The time
// is left out of the text because every log entry carries its own.
func newTaskLogger(sink logSink) *slog.Logger {
	opts := &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}
	return slog.New(&levelSplitHandler{
		out: slog.NewTextHandler(&lineWriter{stream: "stdout", sink: sink}, opts),
		err: slog.NewTextHandler(&lineWriter{stream: "stderr", sink: sink}, opts),
	})
}

// levelSplitHandler sends records to one of two handlers by level.
type levelSplitHandler struct {
	out, err slog.Handler
}

func (h *levelSplitHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.pick(level).Enabled(ctx, level)
}

func (h *levelSplitHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h *levelSplitHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelSplitHandler{out: h.out.WithAttrs(attrs), err: h.err.WithAttrs(attrs)}
}

func (h *levelSplitHandler) WithGroup(name string) slog.Handler {
	return &levelSplitHandler{out: h.out.WithGroup(name), err: h.err.WithGroup(name)}
}

func (h *levelSplitHandler) pick(level slog.Level) slog.Handler {
	if level >= slog.LevelWarn {
		return h.err
	}
	return h.out
}

// lineWriter cuts what is written into lines for a sink. slog's text handler
// writes one whole record per Write, so partial lines are rare; they wait for
// their newline.
type lineWriter struct {
	stream string
	sink   logSink
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.sink(w.stream, string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
