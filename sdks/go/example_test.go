package ork_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	ork "github.com/ork-run/ork/sdks/go"
)

// Greeting is the input of the greet task.
type Greeting struct {
	Name string `json:"name"`
}

// Reply is the output of the greet task.
type Reply struct {
	Message string `json:"message"`
}

// greet is a task function: a typed input, a typed output, and an error
// that fails the attempt.
func greet(ctx *ork.Context, in Greeting) (Reply, error) {
	if in.Name == "" {
		// Retrying cannot fix the input.
		return Reply{}, ork.NonRetryable(errors.New("name is empty"))
	}
	ctx.Log.Info("greeting", "name", in.Name, "attempt", ctx.Attempt)
	return Reply{Message: "hello, " + strings.ToUpper(in.Name)}, nil
}

// Tasks are registered under the handler name that workflows use.
func ExampleTask() {
	task := ork.Task("greet", greet)
	fmt.Println(task.Name())
	// Output: greet
}

// A pool worker serves its tasks until SIGTERM, then drains. The workflow
// routes a task to it with:
//
//	tasks:
//	  - name: hello
//	    executor: workers
//	    handler: greet
//	    input: {name: "{{ run.input.name }}"}
func ExampleNewWorker() {
	worker := ork.NewWorker(
		[]ork.TaskDef{ork.Task("greet", greet)},
		ork.WithServer("http://127.0.0.1:7400"),
		ork.WithSlots(8),
	)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := worker.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// A program run as a plain task command (for example a task whose `file` is
// a Go binary) hands its one task to RunLaunched from main.
func ExampleRunLaunched() {
	ork.RunLaunched(ork.Task("greet", greet))
}

// NonRetryable marks an error, even when it is wrapped further.
func ExampleNonRetryable() {
	err := fmt.Errorf("validating order 42: %w", ork.NonRetryable(errors.New("unknown currency")))
	fmt.Println(ork.IsNonRetryable(err), err)
	fmt.Println(ork.IsNonRetryable(errors.New("timeout")))
	// Output:
	// true validating order 42: unknown currency
	// false
}
