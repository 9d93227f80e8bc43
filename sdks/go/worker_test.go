package ork_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ork "github.com/ork-run/ork/sdks/go"
)

func compactJSON(t *testing.T, data []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %s: %v", data, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

type sumInput struct {
	Values []float64 `json:"values"`
}

type sumOutput struct {
	Sum   float64 `json:"sum"`
	Count int     `json:"count"`
}

// A pool worker runs a typed handler and the output reaches the run, with the
// task's log lines and the context's facts.
func TestPoolWorkerRunsAHandler(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("sum"), uniqueName("sum")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: total
    executor: workers
    handler: %s
    input:
      values: [1, 2, 3.5]
`, wf, handler))

	type seen struct {
		runID, workflow, task, taskRunID string
		attempt                          int
		parallel                         bool
		deadline                         bool
	}
	got := make(chan seen, 1)
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, in sumInput) (sumOutput, error) {
		ctx.Log.Info("summing", "n", len(in.Values))
		ctx.Log.Warn("a warning")
		_, hasDeadline := ctx.Deadline()
		got <- seen{ctx.RunID, ctx.Workflow, ctx.TaskName, ctx.TaskRunID, ctx.Attempt, ctx.ParallelIndex != nil, hasDeadline}
		out := sumOutput{Count: len(in.Values)}
		for _, v := range in.Values {
			out.Sum += v
		}
		return out, nil
	})}, ork.WithSlots(2))

	runID := s.start(t, wf, nil)
	run := s.wait(t, runID, 30*time.Second)
	if run.GetStatus() != "success" {
		t.Fatalf("run ended %s: %v", run.GetStatus(), run.GetTasks())
	}
	tr := taskRuns(run, "total")[0]
	if out := outputJSON(t, tr); out != `{"count":3,"sum":6.5}` {
		t.Errorf("output = %s", out)
	}
	facts := <-got
	want := seen{runID, wf, "total", tr.GetId(), 1, false, true}
	if facts != want {
		t.Errorf("context = %+v, want %+v", facts, want)
	}

	var stdout, stderr bool
	for _, line := range s.logs(t, runID) {
		if line.GetStream() == "stdout" && strings.Contains(line.GetLine(), `msg=summing n=3`) {
			stdout = true
		}
		if line.GetStream() == "stderr" && strings.Contains(line.GetLine(), `level=WARN msg="a warning"`) {
			stderr = true
		}
	}
	if !stdout || !stderr {
		t.Errorf("task log lacks the logger's lines (stdout %v, stderr %v): %v", stdout, stderr, s.logs(t, runID))
	}
}

// An error fails the attempt with its text, and the server retries it as
// `retries` allows: here it fails twice, then succeeds.
func TestAnErrorIsRetried(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("flaky"), uniqueName("flaky")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: flaky
    executor: workers
    handler: %s
    retries: 2
`, wf, handler))
	var calls atomic.Int32
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (map[string]int, error) {
		n := calls.Add(1)
		if int(n) != ctx.Attempt {
			return nil, ork.NonRetryable(fmt.Errorf("call %d saw attempt %d", n, ctx.Attempt))
		}
		if n < 3 {
			return nil, fmt.Errorf("flaky failure %d", n)
		}
		return map[string]int{"attempt": ctx.Attempt}, nil
	})})

	run := s.wait(t, s.start(t, wf, nil), 30*time.Second)
	tr := taskRuns(run, "flaky")[0]
	if run.GetStatus() != "success" || tr.GetAttempt() != 3 {
		t.Fatalf("run %s, task %s at attempt %d: %v", run.GetStatus(), tr.GetStatus(), tr.GetAttempt(), tr.GetAttempts())
	}
	if out := outputJSON(t, tr); out != `{"attempt":3}` {
		t.Errorf("output = %s", out)
	}
	attempts := tr.GetAttempts()
	if len(attempts) != 3 || !strings.Contains(attempts[0].GetError(), "flaky failure 1") ||
		!strings.Contains(attempts[1].GetError(), "flaky failure 2") {
		t.Errorf("attempts = %v", attempts)
	}
}

// When every attempt fails, the run fails with the last error on the task.
func TestAnErrorExhaustsRetries(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("broken"), uniqueName("broken")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: broken
    executor: workers
    handler: %s
    retries: 1
`, wf, handler))
	var calls atomic.Int32
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (any, error) {
		calls.Add(1)
		return nil, errors.New("the disk is on fire")
	})})

	run := s.wait(t, s.start(t, wf, nil), 30*time.Second)
	tr := taskRuns(run, "broken")[0]
	if run.GetStatus() != "failed" || tr.GetStatus() != "failed" {
		t.Fatalf("run %s, task %s", run.GetStatus(), tr.GetStatus())
	}
	if !strings.Contains(tr.GetError(), "the disk is on fire") {
		t.Errorf("task error = %q", tr.GetError())
	}
	if calls.Load() != 2 || len(tr.GetAttempts()) != 2 {
		t.Errorf("calls = %d, attempts = %v; want 2 (1 retry)", calls.Load(), tr.GetAttempts())
	}
}

// NonRetryable fails the task at once, whatever `retries` says; a panic is
// an ordinary (retryable) failure with its stack in the error.
func TestNonRetryableIsNotRetried(t *testing.T) {
	s := server(t)
	wf, refuse, panics := uniqueName("refuse"), uniqueName("refuse"), uniqueName("panics")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: refuse
    executor: workers
    handler: %s
    retries: 3
  - name: panics
    executor: workers
    handler: %s
    retries: 1
`, wf, refuse, panics))
	var refusals, panicked atomic.Int32
	s.startWorker(t, []ork.TaskDef{
		ork.Task(refuse, func(ctx *ork.Context, _ any) (any, error) {
			refusals.Add(1)
			return nil, ork.NonRetryable(errors.New("bad input: no values"))
		}),
		ork.Task(panics, func(ctx *ork.Context, _ any) (any, error) {
			panicked.Add(1)
			panic(fmt.Sprintf("boom on attempt %d", ctx.Attempt))
		}),
	}, ork.WithSlots(2))

	run := s.wait(t, s.start(t, wf, nil), 30*time.Second)
	if run.GetStatus() != "failed" {
		t.Fatalf("run %s", run.GetStatus())
	}
	tr := taskRuns(run, "refuse")[0]
	if tr.GetStatus() != "failed" || !strings.Contains(tr.GetError(), "bad input: no values") {
		t.Errorf("refuse: %s %q", tr.GetStatus(), tr.GetError())
	}
	if refusals.Load() != 1 || len(tr.GetAttempts()) != 1 {
		t.Errorf("refuse ran %d times (%d attempts), want 1", refusals.Load(), len(tr.GetAttempts()))
	}
	p := taskRuns(run, "panics")[0]
	if !strings.Contains(p.GetError(), "panic: boom on attempt 2") || !strings.Contains(p.GetError(), "worker_test.go") {
		t.Errorf("panic error lacks the message or the stack: %q", p.GetError())
	}
	if panicked.Load() != 2 {
		t.Errorf("panicking task ran %d times, want 2 (a panic is retried)", panicked.Load())
	}
}

// CancelRun cancels the running task's context, and the run ends cancelled.
func TestCancelRunCancelsTheContext(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("slow"), uniqueName("slow")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: slow
    executor: workers
    handler: %s
    timeout_seconds: 600
`, wf, handler))
	started := make(chan struct{}, 1)
	cancelled := make(chan error, 1)
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (any, error) {
		started <- struct{}{}
		select {
		case <-ctx.Done():
			if !ctx.Cancelled() {
				cancelled <- errors.New("Done closed but Cancelled() is false")
			}
			cancelled <- nil
			return nil, ctx.Err()
		case <-time.After(60 * time.Second):
			cancelled <- errors.New("the context was not cancelled within 60s")
			return "too late", nil
		}
	})})

	runID := s.start(t, wf, nil)
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("the task did not start\n%s", s.logTail())
	}
	if _, err := s.runs.CancelRun(t.Context(), cancelRequest(runID)); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	select {
	case err := <-cancelled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the task's context was not cancelled within 30s of CancelRun")
	}
	run := s.wait(t, runID, 30*time.Second)
	if run.GetStatus() != "cancelled" {
		t.Errorf("run ended %s, want cancelled", run.GetStatus())
	}
}

// The server never gives a worker more attempts than its slots: a 20-way
// fan-out on 3 slots never runs more than 3 at once in the handler.
func TestSlotsAreRespected(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("fan"), uniqueName("fan")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: each
    executor: workers
    handler: %s
    parallel: 20
`, wf, handler))
	var (
		mu          sync.Mutex
		now, most   int
		seenIndexes = map[int]bool{}
	)
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (map[string]int, error) {
		mu.Lock()
		now++
		most = max(most, now)
		seenIndexes[*ctx.ParallelIndex] = true
		count := *ctx.ParallelCount
		mu.Unlock()
		time.Sleep(150 * time.Millisecond)
		mu.Lock()
		now--
		mu.Unlock()
		return map[string]int{"i": *ctx.ParallelIndex, "n": count}, nil
	})}, ork.WithSlots(3))

	run := s.wait(t, s.start(t, wf, nil), 90*time.Second)
	if run.GetStatus() != "success" {
		t.Fatalf("run ended %s", run.GetStatus())
	}
	mu.Lock()
	defer mu.Unlock()
	if most > 3 {
		t.Errorf("%d tasks ran at once on 3 slots", most)
	}
	if len(seenIndexes) != 20 || len(taskRuns(run, "each")) != 20 {
		t.Errorf("ran indexes %v; %d task runs", seenIndexes, len(taskRuns(run, "each")))
	}
	for _, tr := range taskRuns(run, "each") {
		if want := fmt.Sprintf(`{"i":%d,"n":20}`, tr.GetParallelIndex()); outputJSON(t, tr) != want {
			t.Errorf("instance %d output %s, want %s", tr.GetParallelIndex(), outputJSON(t, tr), want)
		}
	}
}

// Stopping a worker drains it: Run waits for the running task, which
// completes, takes no new work, and returns nil; another worker then
// finishes the run.
func TestStopDrains(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("drain"), uniqueName("drain")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: each
    executor: workers
    handler: %s
    parallel: 2
`, wf, handler))
	started := make(chan int, 2)
	release := make(chan struct{})
	var firstRan atomic.Int32
	first := s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (string, error) {
		firstRan.Add(1)
		started <- *ctx.ParallelIndex
		select {
		case <-release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return "done by the first worker", nil
	})}, ork.WithSlots(1))

	runID := s.start(t, wf, nil)
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("no task started\n%s", s.logTail())
	}
	stopped := make(chan error, 1)
	go func() { stopped <- first.stop(t, 60*time.Second) }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while its task was still running", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
	if n := firstRan.Load(); n != 1 {
		t.Errorf("the draining worker ran %d tasks, want 1", n)
	}

	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (string, error) {
		return "done by the second worker", nil
	})})
	run := s.wait(t, runID, 30*time.Second)
	if run.GetStatus() != "success" {
		t.Fatalf("run ended %s", run.GetStatus())
	}
	outs := map[string]int{}
	for _, tr := range taskRuns(run, "each") {
		outs[outputJSON(t, tr)]++
	}
	if outs[`"done by the first worker"`] != 1 || outs[`"done by the second worker"`] != 1 {
		t.Errorf("outputs = %v", outs)
	}
}
