// Package ork is the Go SDK for ork, a workflow orchestrator: it runs Go
// functions as the tasks of ork workflows.
//
// A task is a plain function from a JSON-decodable input to a
// JSON-encodable output:
//
//	type SumInput struct{ Values []float64 `json:"values"` }
//	type SumOutput struct {
//		Sum   float64 `json:"sum"`
//		Count int     `json:"count"`
//	}
//
//	func sum(ctx *ork.Context, in SumInput) (SumOutput, error) {
//		ctx.Log.Info("summing", "n", len(in.Values))
//		...
//	}
//
//	var Sum = ork.Task("go_sum", sum)
//
// The function receives a [*Context]: a [context.Context] that is cancelled
// when the run is cancelled or the attempt times out, plus the run and task
// identifiers, the attempt number, the fan-out position and a
// [*log/slog.Logger] whose records become the task's log lines. Returning an
// error fails the attempt, which the server retries as the workflow's
// `retries` allows; wrap it with [NonRetryable] when retrying cannot help.
//
// # Pool mode
//
// A long-lived worker serves tasks whose YAML says `executor: workers` and
// names the function with `handler`:
//
//	tasks:
//	  - name: total
//	    executor: workers
//	    handler: go_sum
//	    input: {values: [1, 2, 3]}
//
// [NewWorker] builds the worker and [Worker.Run] attaches it to the server
// over one gRPC stream; the server pushes at most [WithSlots] attempts at a
// time. Cancelling the context given to Run drains the worker: it takes no
// new work, finishes what it runs and returns.
//
// # Launched mode
//
// A Go program can also be a plain task command, started once per attempt by
// ork's supervisor: [RunLaunched] reads the input from the file named by
// ORK_INPUT, calls the function and writes its output to ORK_OUTPUT, or its
// error to ORK_ERROR with exit code 1 (3 when the error is [NonRetryable]).
//
// # Authentication and TLS
//
// Against a server that requires tokens, give the worker a worker token
// ([WithToken], default $ORK_TOKEN). An https:// server is reached over TLS,
// trusting [WithCACert] (default $ORK_CA_CERT, else the system's roots) and
// presenting [WithClientCert] under mutual TLS ($ORK_CLIENT_CERT,
// $ORK_CLIENT_KEY).
package ork
