package ork

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"
)

// Exit codes of a launched task, as ork's supervisor reads them.
const (
	// ExitFailed is a failure that the server may retry.
	ExitFailed = 1
	// ExitNonRetryable is a failure that must not be retried.
	ExitNonRetryable = 3
)

// RunLaunched runs task once as a plain task command and exits the process:
// the input is read from the file named by ORK_INPUT (none or an empty file
// is null), the output is written as JSON to the file named by ORK_OUTPUT
// (stdout when unset). On failure the error text goes to the file named by
// ORK_ERROR (stderr when unset) and the exit code is 1, or 3 when the error
// is [NonRetryable]. SIGTERM and SIGINT cancel the task's context, and
// ORK_DEADLINE (RFC 3339) becomes its deadline. The task's log writes to
// stdout (Warn and above to stderr), which the supervisor captures.
//
// Call it from main:
//
//	func main() { ork.RunLaunched(ork.Task("resize", resize)) }
func RunLaunched(task TaskDef) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := runLaunched(ctx, task, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runLaunched is RunLaunched without the process: it returns the exit code.
func runLaunched(ctx context.Context, task TaskDef, getenv func(string) string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		text := err.Error()
		if path := getenv("ORK_ERROR"); path != "" {
			if werr := os.WriteFile(path, []byte(text), 0o644); werr != nil {
				fmt.Fprintf(stderr, "ork: cannot write the error to ORK_ERROR (%s): %v\n", path, werr)
			}
		}
		// The error also goes to stderr, so that it shows in the task's log
		// and a supervisor without ORK_ERROR still finds it there.
		fmt.Fprintf(stderr, "%s\n", text)
		if IsNonRetryable(err) {
			return ExitNonRetryable
		}
		return ExitFailed
	}
	if task.call == nil {
		return fail(NonRetryable(fmt.Errorf("ork.RunLaunched needs a task made with ork.Task")))
	}

	var input []byte
	if path := getenv("ORK_INPUT"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fail(fmt.Errorf("cannot read the input named by ORK_INPUT: %w", err))
		}
		input = data
	}

	tctx := &Context{
		RunID:       getenv("ORK_RUN_ID"),
		Workflow:    getenv("ORK_WORKFLOW"),
		TaskName:    getenv("ORK_TASK_NAME"),
		TaskRunID:   getenv("ORK_TASK_RUN_ID"),
		Metrics:     &Metrics{},
		Traceparent: getenv("TRACEPARENT"),
		Log: newTaskLogger(func(stream, line string) {
			w := stdout
			if stream == "stderr" {
				w = stderr
			}
			fmt.Fprintln(w, line)
		}),
	}
	var err error
	if tctx.Attempt, err = optionalInt(getenv, "ORK_ATTEMPT"); err != nil {
		return fail(err)
	}
	for name, field := range map[string]**int{"ORK_PARALLEL_INDEX": &tctx.ParallelIndex, "ORK_PARALLEL_COUNT": &tctx.ParallelCount} {
		if getenv(name) == "" {
			continue
		}
		n, err := optionalInt(getenv, name)
		if err != nil {
			return fail(err)
		}
		*field = &n
	}
	if d := getenv("ORK_DEADLINE"); d != "" {
		deadline, err := time.Parse(time.RFC3339Nano, d)
		if err != nil {
			return fail(fmt.Errorf("ORK_DEADLINE must be an RFC 3339 time, got %q: %w", d, err))
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	spanCtx, span := startTaskSpan(ctx, task.name, tctx.Traceparent)
	tctx.Context = spanCtx

	output, err := callRecovering(task, tctx, input)
	span.End()
	// What the task recorded reaches the supervisor, success or failure.
	if values := tctx.Metrics.Snapshot(); len(values) > 0 {
		if path := getenv("ORK_METRICS"); path != "" {
			if werr := os.WriteFile(path, []byte(metricsFile(values)), 0o644); werr != nil {
				fmt.Fprintf(stderr, "ork: cannot write the metrics to ORK_METRICS (%s): %v\n", path, werr)
			}
		}
	}
	if err != nil {
		return fail(err)
	}
	if path := getenv("ORK_OUTPUT"); path != "" {
		if err := os.WriteFile(path, output, 0o644); err != nil {
			return fail(fmt.Errorf("cannot write the output named by ORK_OUTPUT: %w", err))
		}
	} else {
		fmt.Fprintf(stdout, "%s\n", output)
	}
	return 0
}

// callRecovering runs the task, turning a panic into a retryable error.
func callRecovering(task TaskDef, ctx *Context, input []byte) (output []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n\n%s", r, debug.Stack())
		}
	}()
	return task.call(ctx, input)
}

// optionalInt reads a non-negative integer variable; unset is 0.
func optionalInt(getenv func(string) string, name string) (int, error) {
	v := getenv(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s must be a non-negative integer, got %q", name, v)
	}
	return n, nil
}
