package ork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	orkv1 "github.com/ork-run/ork/sdks/go/gen/orkv1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// Log lines are sent in batches at least this often...
	logFlushInterval = 200 * time.Millisecond
	// ...or as soon as this many are waiting.
	logBatchLines = 500
	// Lines kept while the server cannot take them; older ones are dropped
	// first so a long outage cannot exhaust memory.
	logBufferLimit = 20000
	// How long the final reports of an attempt may keep retrying.
	reportTimeout = 2 * time.Minute
)

// attemptRun is one assignment running in a pool worker.
type attemptRun struct {
	client            orkv1.WorkerServiceClient
	ref               *orkv1.AttemptRef
	spec              *orkv1.TaskSpec
	task              *TaskDef
	heartbeatInterval time.Duration
	logger            *slog.Logger // the worker's own log
	metrics           *Metrics     // what the task records

	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// silenced is set once the server cancelled the attempt or called it
	// stale: from then on the worker reports nothing for it.
	silenced bool
	reason   string
}

func newAttemptRun(parent context.Context, client orkv1.WorkerServiceClient, ref *orkv1.AttemptRef, spec *orkv1.TaskSpec, task *TaskDef, heartbeat time.Duration, logger *slog.Logger) *attemptRun {
	ctx, cancel := context.WithCancel(parent)
	if spec.GetDeadline() != nil {
		var cancelCancel context.CancelFunc = cancel
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, spec.GetDeadline().AsTime())
		cancel = func() { cancelDeadline(); cancelCancel() }
	}
	if s := spec.GetHeartbeatIntervalSeconds(); s > 0 {
		heartbeat = time.Duration(s) * time.Second
	}
	return &attemptRun{
		client:            client,
		ref:               ref,
		spec:              spec,
		task:              task,
		heartbeatInterval: heartbeat,
		logger:            logger.With("task", spec.GetTaskName(), "task_run_id", ref.GetTaskRunId(), "attempt", ref.GetAttempt()),
		metrics:           &Metrics{},
		ctx:               ctx,
		cancel:            cancel,
	}
}

// stop cancels the task's context and silences the attempt.
func (a *attemptRun) stop(reason string) {
	a.mu.Lock()
	if !a.silenced {
		a.silenced = true
		a.reason = reason
	}
	a.mu.Unlock()
	a.cancel()
}

func (a *attemptRun) isSilenced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.silenced
}

// execute runs the attempt from StartTask to its report.
func (a *attemptRun) execute() {
	defer a.cancel()
	// Reports use their own context: the task's may be cancelled by its
	// deadline, and the result still has to reach the server.
	reportCtx, cancelReports := context.WithTimeout(context.Background(), reportTimeout)
	defer cancelReports()

	err := callFenced(a.ctx, func(ctx context.Context) error {
		_, err := a.client.StartTask(ctx, &orkv1.StartTaskRequest{Attempt: a.ref})
		return err
	})
	if err != nil {
		if !errors.Is(err, errStale) && a.ctx.Err() == nil {
			a.logger.Error("cannot start the attempt; the server will retry it", "error", err)
		}
		return
	}

	logs := newLogShipper(a.client, a.ref, a.logger)
	hbDone := make(chan struct{})
	hbStopped := make(chan struct{})
	go func() {
		defer close(hbStopped)
		a.heartbeat(hbDone)
	}()

	output, runErr := a.call(logs)

	close(hbDone)
	<-hbStopped
	logs.close(reportCtx)

	if a.isSilenced() {
		a.logger.Debug("attempt stopped by the server", "reason", a.reason)
		return
	}
	if runErr == nil {
		value, convErr := jsonToValue(output)
		if convErr != nil {
			runErr = NonRetryable(fmt.Errorf("the output of task %s is not valid JSON: %w", a.spec.GetTaskName(), convErr))
		} else {
			err = callFenced(reportCtx, func(ctx context.Context) error {
				_, err := a.client.CompleteTask(ctx, &orkv1.CompleteTaskRequest{Attempt: a.ref, Output: value, Metrics: a.metrics.Snapshot()})
				return err
			})
		}
	}
	if runErr != nil {
		err = callFenced(reportCtx, func(ctx context.Context) error {
			_, err := a.client.FailTask(ctx, &orkv1.FailTaskRequest{
				Attempt:      a.ref,
				Error:        runErr.Error(),
				NonRetryable: IsNonRetryable(runErr),
				Metrics:      a.metrics.Snapshot(),
			})
			return err
		})
	}
	if err != nil && !errors.Is(err, errStale) {
		a.logger.Error("cannot report the attempt's result; the server will retry it", "error", err)
	}
}

// call runs the task function, turning a panic into a retryable error.
func (a *attemptRun) call(logs *logShipper) ([]byte, error) {
	if a.task == nil {
		return nil, NonRetryable(fmt.Errorf("this worker has no handler %q", a.spec.GetHandler()))
	}
	input, err := valueToJSON(a.spec.GetInput())
	if err != nil {
		return nil, NonRetryable(fmt.Errorf("cannot read the task's input: %w", err))
	}
	tctx := &Context{
		Context:   a.ctx,
		RunID:     a.spec.GetRunId(),
		Workflow:  a.spec.GetWorkflow(),
		TaskName:  a.spec.GetTaskName(),
		TaskRunID: a.ref.GetTaskRunId(),
		Attempt:   int(a.ref.GetAttempt()),
		Log:       newTaskLogger(logs.add),
		Metrics:   a.metrics,
		env:       a.spec.GetEnv(),
	}
	tctx.Traceparent = a.spec.GetTraceparent()
	spanCtx, span := startTaskSpan(a.ctx, a.task.name, tctx.Traceparent)
	defer span.End()
	tctx.Context = spanCtx
	if a.spec.ParallelIndex != nil {
		i := int(a.spec.GetParallelIndex())
		tctx.ParallelIndex = &i
	}
	if a.spec.ParallelCount != nil {
		n := int(a.spec.GetParallelCount())
		tctx.ParallelCount = &n
	}
	return callRecovering(*a.task, tctx, input)
}

// heartbeat tells the server the attempt is alive until done is closed, and
// stops the attempt when the server says it was cancelled or is stale.
func (a *attemptRun) heartbeat(done <-chan struct{}) {
	t := time.NewTicker(a.heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		var cancelled bool
		err := callFenced(a.ctx, func(ctx context.Context) error {
			resp, err := a.client.Heartbeat(ctx, &orkv1.HeartbeatRequest{Attempt: a.ref})
			cancelled = resp.GetCancelled()
			return err
		})
		switch {
		case errors.Is(err, errStale):
			a.stop("the attempt is no longer current")
			return
		case err != nil:
			if a.ctx.Err() == nil {
				a.logger.Warn("heartbeat failed", "error", err)
			}
		case cancelled:
			a.stop("cancelled")
			return
		}
	}
}

// logShipper batches an attempt's log lines into AppendLogs calls.
type logShipper struct {
	client orkv1.WorkerServiceClient
	ref    *orkv1.AttemptRef
	logger *slog.Logger

	mu      sync.Mutex
	pending []*orkv1.LogEntry
	dropped int
	stale   bool

	wake    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

func newLogShipper(client orkv1.WorkerServiceClient, ref *orkv1.AttemptRef, logger *slog.Logger) *logShipper {
	s := &logShipper{
		client:  client,
		ref:     ref,
		logger:  logger,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go s.loop()
	return s
}

// add queues one line; it never blocks on the network.
func (s *logShipper) add(stream, line string) {
	s.mu.Lock()
	if s.stale {
		s.mu.Unlock()
		return
	}
	s.pending = append(s.pending, &orkv1.LogEntry{Stream: stream, Line: line, Time: timestamppb.Now()})
	if over := len(s.pending) - logBufferLimit; over > 0 {
		s.pending = s.pending[over:]
		s.dropped += over
	}
	full := len(s.pending) >= logBatchLines
	s.mu.Unlock()
	if full {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *logShipper) loop() {
	defer close(s.stopped)
	t := time.NewTicker(logFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.wake:
		}
		s.flush(context.Background(), false)
	}
}

// flush sends what is pending in batches; with all false it sends at most
// one batch, so a steady writer cannot starve the ticker.
func (s *logShipper) flush(ctx context.Context, all bool) {
	for {
		s.mu.Lock()
		if s.stale || len(s.pending) == 0 {
			s.mu.Unlock()
			return
		}
		n := min(len(s.pending), logBatchLines)
		batch := s.pending[:n:n]
		s.mu.Unlock()

		err := callFenced(ctx, func(ctx context.Context) error {
			_, err := s.client.AppendLogs(ctx, &orkv1.AppendLogsRequest{Attempt: s.ref, Entries: batch})
			return err
		})

		s.mu.Lock()
		switch {
		case errors.Is(err, errStale):
			s.stale = true
			s.pending = nil
		case err != nil:
			// Keep the lines for the next flush; the buffer limit bounds them.
			s.mu.Unlock()
			s.logger.Warn("cannot send task logs", "error", err)
			return
		default:
			// Lines may have been dropped from the front meanwhile, so remove
			// only what is still there of this batch.
			s.pending = removeSent(s.pending, batch)
		}
		more := len(s.pending) > 0
		s.mu.Unlock()
		if !all || !more {
			return
		}
	}
}

// removeSent drops the entries of batch from the front of pending.
func removeSent(pending, batch []*orkv1.LogEntry) []*orkv1.LogEntry {
	sent := make(map[*orkv1.LogEntry]bool, len(batch))
	for _, e := range batch {
		sent[e] = true
	}
	i := 0
	for i < len(pending) && sent[pending[i]] {
		i++
	}
	return pending[i:]
}

// close stops the background flushing and sends everything left.
func (s *logShipper) close(ctx context.Context) {
	close(s.done)
	<-s.stopped
	s.flush(ctx, true)
	s.mu.Lock()
	dropped := s.dropped
	s.mu.Unlock()
	if dropped > 0 {
		s.logger.Warn("task log lines were dropped while the server was unreachable", "lines", dropped)
	}
}
