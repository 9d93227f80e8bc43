// Command worker is a pool worker serving two Go handlers, go_sum and
// go_upper. It is the Go side of ork's polyglot end-to-end test and a
// starting point for your own workers:
//
//	ORK_SERVER=http://127.0.0.1:7400 go run ./examples/worker -slots 4
//
// A workflow routes a task to it with `executor: workers` and the handler
// name:
//
//	tasks:
//	  - name: total
//	    executor: workers
//	    handler: go_sum
//	    input: {values: [1, 2, 3]}
//
// SIGTERM or Ctrl-C drains the worker: it finishes its running tasks, then
// exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	ork "github.com/ork-run/ork/sdks/go"
)

// SumInput is the input of go_sum.
type SumInput struct {
	Values []float64 `json:"values"`
}

// SumOutput is the output of go_sum.
type SumOutput struct {
	Sum   float64 `json:"sum"`
	Count int     `json:"count"`
}

// sum adds up numbers.
func sum(ctx *ork.Context, in SumInput) (SumOutput, error) {
	ctx.Log.Info("summing", "count", len(in.Values), "attempt", ctx.Attempt)
	out := SumOutput{Count: len(in.Values)}
	for _, v := range in.Values {
		out.Sum += v
	}
	return out, nil
}

// Text is the input and output of go_upper.
type Text struct {
	Text string `json:"text"`
}

// upper upper-cases text.
func upper(ctx *ork.Context, in Text) (Text, error) {
	ctx.Log.Info("upper-casing", "length", len(in.Text))
	return Text{Text: strings.ToUpper(in.Text)}, nil
}

func main() {
	slots := flag.Int("slots", 4, "how many tasks to run at once")
	server := flag.String("server", "", "server URL (default $ORK_SERVER, else http://127.0.0.1:7400)")
	name := flag.String("name", "", "worker name shown to people (default host:pid)")
	flag.Parse()

	opts := []ork.Option{ork.WithSlots(*slots)}
	if *server != "" {
		opts = append(opts, ork.WithServer(*server))
	}
	if *name != "" {
		opts = append(opts, ork.WithName(*name))
	}
	worker := ork.NewWorker([]ork.TaskDef{
		ork.Task("go_sum", sum),
		ork.Task("go_upper", upper),
	}, opts...)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := worker.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
