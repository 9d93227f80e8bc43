package ork

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	orkv1 "github.com/ork-run/ork/sdks/go/gen/orkv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// Log lines are sent in batches at least this often...
	logFlushInterval = 200 * time.Millisecond
	// ...or as soon as this many are waiting.
	logBatchLines = 500
	// Lines kept while the task writes faster than they are sent; older
	// ones are dropped first so memory stays bounded.
	logBufferLimit = 20000
	// How long an attempt waits for the answer to its outcome.
	reportTimeout = 2 * time.Minute
)

// reporter sends an attempt's reports over the session and routes the
// server's answers back, by report id.
type reporter struct {
	send func(*orkv1.SessionRequest) error

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]chan *orkv1.SessionReportResult
	closed  bool
}

func newReporter(send func(*orkv1.SessionRequest) error) *reporter {
	return &reporter{send: send, waiting: make(map[uint64]chan *orkv1.SessionReportResult)}
}

// report sends one report; the channel yields the server's answer, or is
// closed without one when the session ends first.
func (r *reporter) report(ref *orkv1.AttemptRef, logs []*orkv1.LogEntry, outcome func(*orkv1.SessionReport)) <-chan *orkv1.SessionReportResult {
	answer := make(chan *orkv1.SessionReportResult, 1)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		close(answer)
		return answer
	}
	r.nextID++
	id := r.nextID
	r.waiting[id] = answer
	r.mu.Unlock()
	msg := &orkv1.SessionReport{Id: id, Attempt: ref, Logs: logs}
	if outcome != nil {
		outcome(msg)
	}
	if err := r.send(&orkv1.SessionRequest{Message: &orkv1.SessionRequest_Report{Report: msg}}); err != nil {
		r.mu.Lock()
		if ch, ok := r.waiting[id]; ok {
			delete(r.waiting, id)
			close(ch)
		}
		r.mu.Unlock()
	}
	return answer
}

// answered hands the server's answer to whoever waits for it.
func (r *reporter) answered(res *orkv1.SessionReportResult) {
	r.mu.Lock()
	ch, ok := r.waiting[res.GetId()]
	delete(r.waiting, res.GetId())
	r.mu.Unlock()
	if ok {
		ch <- res
		close(ch)
	}
}

// pending counts the reports not answered yet.
func (r *reporter) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiting)
}

// close ends the session's reports: nothing more is sent, and whoever still
// waits for an answer hears there will be none.
func (r *reporter) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, ch := range r.waiting {
		close(ch)
		delete(r.waiting, id)
	}
}

// attemptRun is one assignment running in a pool worker. The server started
// it (the assignment is its start) and keeps it alive while the session
// lives, so the worker sends no start and no heartbeats: only its log lines
// and its outcome, over the session.
type attemptRun struct {
	reports *reporter
	ref     *orkv1.AttemptRef
	spec    *orkv1.TaskSpec
	task    *TaskDef
	logger  *slog.Logger // the worker's own log
	metrics *Metrics     // what the task records

	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// silenced is set once the server cancelled the attempt or called it
	// stale: from then on the worker reports nothing for it.
	silenced bool
	reason   string
}

func newAttemptRun(parent context.Context, reports *reporter, ref *orkv1.AttemptRef, spec *orkv1.TaskSpec, task *TaskDef, logger *slog.Logger) *attemptRun {
	ctx, cancel := context.WithCancel(parent)
	if spec.GetDeadline() != nil {
		var cancelCancel context.CancelFunc = cancel
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, spec.GetDeadline().AsTime())
		cancel = func() { cancelDeadline(); cancelCancel() }
	}
	return &attemptRun{
		reports: reports,
		ref:     ref,
		spec:    spec,
		task:    task,
		logger:  logger.With("task", spec.GetTaskName(), "task_run_id", ref.GetTaskRunId(), "attempt", ref.GetAttempt()),
		metrics: &Metrics{},
		ctx:     ctx,
		cancel:  cancel,
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

// execute runs the attempt and reports its outcome.
func (a *attemptRun) execute() {
	defer a.cancel()
	logs := newLogShipper(a)
	output, runErr := a.call(logs)
	// The log lines go first: the server applies an attempt's reports in the
	// order they were sent.
	logs.close()

	if a.isSilenced() {
		a.logger.Debug("attempt stopped by the server", "reason", a.reason)
		return
	}
	var outcome func(*orkv1.SessionReport)
	if runErr == nil {
		value, convErr := jsonToValue(output)
		if convErr != nil {
			runErr = NonRetryable(fmt.Errorf("the output of task %s is not valid JSON: %w", a.spec.GetTaskName(), convErr))
		} else {
			outcome = func(r *orkv1.SessionReport) {
				r.Outcome = &orkv1.SessionReport_Success{Success: &orkv1.AttemptSuccess{Output: value, Metrics: a.metrics.Snapshot()}}
			}
		}
	}
	if runErr != nil {
		failure := &orkv1.AttemptFailure{Error: runErr.Error(), NonRetryable: IsNonRetryable(runErr), Metrics: a.metrics.Snapshot()}
		outcome = func(r *orkv1.SessionReport) {
			r.Outcome = &orkv1.SessionReport_Failure{Failure: failure}
		}
	}
	answer := a.reports.report(a.ref, nil, outcome)
	select {
	case res, ok := <-answer:
		switch {
		case !ok:
			a.logger.Warn("the session ended before the attempt's report was answered; the server retries the attempt")
		case res.GetCode() == int32(codes.FailedPrecondition):
			a.logger.Debug("the attempt is no longer current", "message", res.GetMessage())
		case res.GetCode() != 0:
			a.logger.Error("the server refused the attempt's report", "code", codes.Code(res.GetCode()), "message", res.GetMessage())
		}
	case <-time.After(reportTimeout):
		a.logger.Error("no answer to the attempt's report; the server retries the attempt if it did not get it")
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

// logShipper batches an attempt's log lines into reports over the session.
// Sending never waits for the server: an answer of FAILED_PRECONDITION stops
// the attempt.
type logShipper struct {
	run *attemptRun

	mu      sync.Mutex
	pending []*orkv1.LogEntry
	dropped int

	wake    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

func newLogShipper(run *attemptRun) *logShipper {
	s := &logShipper{
		run:     run,
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
		s.flush()
	}
}

// flush sends what is pending, in batches of at most logBatchLines.
func (s *logShipper) flush() {
	for {
		s.mu.Lock()
		if len(s.pending) == 0 || s.run.isSilenced() {
			s.pending = nil
			s.mu.Unlock()
			return
		}
		n := min(len(s.pending), logBatchLines)
		batch := s.pending[:n:n]
		s.pending = s.pending[n:]
		s.mu.Unlock()
		answer := s.run.reports.report(s.run.ref, batch, nil)
		go func() {
			if res, ok := <-answer; ok && res.GetCode() == int32(codes.FailedPrecondition) {
				s.run.stop("the attempt is no longer current")
			}
		}()
	}
}

// close stops the background flushing and sends everything left.
func (s *logShipper) close() {
	close(s.done)
	<-s.stopped
	s.flush()
	s.mu.Lock()
	dropped := s.dropped
	s.mu.Unlock()
	if dropped > 0 {
		s.run.logger.Warn("task log lines were dropped: the task wrote them faster than they could be sent", "lines", dropped)
	}
}
