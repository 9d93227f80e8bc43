package ork

import (
	"context"
	"log/slog"
	"os"
)

// Context is what a task function receives: a [context.Context] for the
// attempt plus facts about the task it runs.
//
// The embedded context is cancelled when the run is cancelled, when the
// server stops the attempt, or (in launched mode) on SIGTERM; its Deadline
// is the attempt's deadline when the task has a timeout. Long-running tasks
// should watch Done or [Context.Cancelled] and return early.
type Context struct {
	context.Context

	// RunID identifies the workflow run.
	RunID string
	// Workflow is the workflow's name.
	Workflow string
	// TaskName is the task's name in the workflow.
	TaskName string
	// TaskRunID identifies this instance of the task within the run (one per
	// fan-out index); it stays the same across retries.
	TaskRunID string
	// Attempt counts this task run's attempts from 1.
	Attempt int
	// ParallelIndex is the instance's position in a fan-out, from 0; nil
	// when the task does not fan out.
	ParallelIndex *int
	// ParallelCount is how many instances the fan-out has; nil when the task
	// does not fan out.
	ParallelCount *int
	// Log writes to the task's log: records at Warn and above become stderr
	// lines, the rest stdout lines.
	Log *slog.Logger
	// Metrics records figures for this attempt: ctx.Metrics.Record("rows", 1200).
	Metrics *Metrics
	// Traceparent is the W3C trace context of this attempt's span (empty when
	// the server sent none). The embedded context already carries the span
	// `task <name>` started from it.
	Traceparent string

	// env holds the task's own `env` from the YAML in pool mode, where the
	// process environment belongs to the whole worker.
	env map[string]string
}

// Cancelled reports whether the attempt was cancelled or ran past its
// deadline, so the task should stop.
func (c *Context) Cancelled() bool { return c.Err() != nil }

// Getenv returns a variable of the task's `env` (secrets included). Pool
// workers receive it with each assignment, since their process environment
// is shared by every task; launched tasks have it in their process
// environment, which Getenv falls back to.
func (c *Context) Getenv(key string) string {
	if v, ok := c.env[key]; ok {
		return v
	}
	return os.Getenv(key)
}
