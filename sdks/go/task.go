package ork

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// TaskDef is a named task function, made by [Task]. Its zero value is not a
// valid task.
type TaskDef struct {
	name string
	// call decodes the input, runs the user's function and encodes its output.
	call func(ctx *Context, input []byte) ([]byte, error)
}

// Name returns the handler name the task is registered under.
func (t TaskDef) Name() string { return t.name }

// handlerName is what the server accepts in a task's `handler` field.
var handlerName = regexp.MustCompile(`^[A-Za-z0-9_\-.:/]+$`)

// Task names fn so that workers can serve it and launched programs can run
// it. T is decoded from the task's JSON input with encoding/json (a missing
// or null input leaves T at its zero value) and U is encoded as the task's
// output. Use map[string]any or json.RawMessage for untyped input or output.
//
// Task panics when name is not a valid handler name (letters, digits and
// `_-.:/`) or fn is nil, since both are programming errors.
func Task[T, U any](name string, fn func(ctx *Context, input T) (U, error)) TaskDef {
	if !handlerName.MatchString(name) {
		panic(fmt.Sprintf("ork: %q is not a handler name; use letters, digits and `_-.:/`", name))
	}
	if fn == nil {
		panic(fmt.Sprintf("ork: task %q has a nil function", name))
	}
	return TaskDef{
		name: name,
		call: func(ctx *Context, raw []byte) ([]byte, error) {
			var input T
			if len(raw) > 0 {
				if err := json.Unmarshal(raw, &input); err != nil {
					return nil, NonRetryable(fmt.Errorf("cannot decode the input of task %s into %T: %w", name, input, err))
				}
			}
			output, err := fn(ctx, input)
			if err != nil {
				return nil, err
			}
			encoded, err := json.Marshal(output)
			if err != nil {
				return nil, NonRetryable(fmt.Errorf("cannot encode the output of task %s as JSON: %w", name, err))
			}
			return encoded, nil
		},
	}
}

// nonRetryableError marks an error that retrying cannot fix.
type nonRetryableError struct{ err error }

func (e *nonRetryableError) Error() string { return e.err.Error() }
func (e *nonRetryableError) Unwrap() error { return e.err }

// NonRetryable wraps err so that the attempt fails without being retried,
// whatever the task's `retries` says: use it for bad input or a permanent
// refusal. It returns nil when err is nil.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &nonRetryableError{err: err}
}

// IsNonRetryable reports whether err, or an error it wraps, came from
// [NonRetryable].
func IsNonRetryable(err error) bool {
	var target *nonRetryableError
	return errors.As(err, &target)
}
