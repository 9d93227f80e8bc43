package ork_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ork "github.com/ork-run/ork/sdks/go"
	orkv1 "github.com/ork-run/ork/sdks/go/gen/orkv1"
)

// A worker started before its server waits for it, and a worker whose
// server dies attaches again to the next one.
func TestWorkerReconnectsWhenTheServerRestarts(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	_ = l.Close()

	wf, handler := uniqueName("again"), uniqueName("again")
	startWorkerAt(t, "http://"+listen, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, in map[string]string) (string, error) {
		return "served " + in["n"], nil
	})})

	yaml := fmt.Sprintf(`
name: %s
tasks:
  - name: one
    executor: workers
    handler: %s
    input:
      n: "{{ run.input.n }}"
`, wf, handler)
	check := func(s *testServer, n string) {
		t.Helper()
		run := s.wait(t, s.start(t, wf, map[string]any{"n": n}), 30*time.Second)
		if run.GetStatus() != "success" {
			t.Fatalf("run %s ended %s", n, run.GetStatus())
		}
		if out := outputJSON(t, taskRuns(run, "one")[0]); out != `"served `+n+`"` {
			t.Errorf("output = %s", out)
		}
	}

	first, err := startServer(listen, dir)
	if err != nil {
		t.Fatal(err)
	}
	first.deploy(t, yaml)
	check(first, "1")
	first.stop(syscall.SIGKILL)

	second, err := startServer(listen, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer second.stop(os.Interrupt)
	check(second, "2")
}

// Many log lines arrive complete and in order, across several batches.
func TestManyLogLinesArriveInOrder(t *testing.T) {
	s := server(t)
	wf, handler := uniqueName("chatty"), uniqueName("chatty")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: chatty
    executor: workers
    handler: %s
`, wf, handler))
	const lines = 1234
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(ctx *ork.Context, _ any) (int, error) {
		for i := range lines {
			ctx.Log.Info("line", "i", i)
		}
		return lines, nil
	})})
	runID := s.start(t, wf, nil)
	if run := s.wait(t, runID, 30*time.Second); run.GetStatus() != "success" {
		t.Fatalf("run ended %s", run.GetStatus())
	}
	var got []string
	cursor := ""
	for {
		resp, err := s.runs.GetTaskLogs(t.Context(), &orkv1.GetTaskLogsRequest{RunId: runID, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range resp.GetLines() {
			got = append(got, l.GetLine())
		}
		if len(resp.GetLines()) == 0 || resp.GetNextCursor() == "" {
			break
		}
		cursor = resp.GetNextCursor()
	}
	if len(got) != lines {
		t.Fatalf("got %d lines, want %d", len(got), lines)
	}
	for i, line := range got {
		if want := fmt.Sprintf("level=INFO msg=line i=%d", i); line != want {
			t.Fatalf("line %d = %q, want %q", i, line, want)
		}
	}
}

// The example worker (examples/worker) serves go_sum and go_upper, passes
// outputs along a workflow, and exits 0 on SIGTERM.
func TestExampleWorker(t *testing.T) {
	s := server(t)
	bin := filepath.Join(t.TempDir(), "worker")
	build := exec.Command("go", "build", "-o", bin, "./examples/worker")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/worker: %v\n%s", err, out)
	}
	wf := uniqueName("example")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: total
    executor: workers
    handler: go_sum
    input:
      values: "{{ run.input.values }}"
  - name: shout
    executor: workers
    handler: go_upper
    depends_on: [total]
    input:
      text: "sum is {{ tasks.total.output.sum }} of {{ tasks.total.output.count }}"
`, wf))

	var stderr strings.Builder
	worker := exec.Command(bin, "-slots", "2")
	worker.Env = append(os.Environ(), "ORK_SERVER="+s.url)
	worker.Stderr = &stderr
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- worker.Wait() }()
	defer func() {
		_ = worker.Process.Kill()
	}()

	run := s.wait(t, s.start(t, wf, map[string]any{"values": []any{1, 2, 3, 4.5}}), 30*time.Second)
	if run.GetStatus() != "success" {
		t.Fatalf("run ended %s; worker said:\n%s", run.GetStatus(), stderr.String())
	}
	if out := outputJSON(t, taskRuns(run, "total")[0]); out != `{"count":4,"sum":10.5}` {
		t.Errorf("total = %s", out)
	}
	if out := outputJSON(t, taskRuns(run, "shout")[0]); out != `{"text":"SUM IS 10.5 OF 4"}` {
		t.Errorf("shout = %s", out)
	}

	if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the worker exited with %v after SIGTERM; it said:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not exit within 30s of SIGTERM")
	}
}
