package ork_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ork "github.com/ork-run/ork/sdks/go"
)

// launchedTasks are the programs the test binary can become: each test runs
// the binary again with launchedHelperEnv naming one of them.
var launchedTasks = map[string]ork.TaskDef{
	"sum": ork.Task("sum", func(ctx *ork.Context, in sumInput) (sumOutput, error) {
		ctx.Log.Info("summing", "n", len(in.Values))
		ctx.Log.Error("to stderr")
		out := sumOutput{Count: len(in.Values)}
		for _, v := range in.Values {
			out.Sum += v
		}
		return out, nil
	}),
	"facts": ork.Task("facts", func(ctx *ork.Context, _ any) (map[string]any, error) {
		deadline, ok := ctx.Deadline()
		facts := map[string]any{
			"run": ctx.RunID, "workflow": ctx.Workflow, "task": ctx.TaskName,
			"task_run": ctx.TaskRunID, "attempt": ctx.Attempt, "has_deadline": ok,
		}
		if ok {
			facts["deadline"] = deadline.UTC().Format(time.RFC3339)
		}
		if ctx.ParallelIndex != nil {
			facts["index"], facts["count"] = *ctx.ParallelIndex, *ctx.ParallelCount
		}
		return facts, nil
	}),
	"fail": ork.Task("fail", func(ctx *ork.Context, _ any) (any, error) {
		return nil, errors.New("the disk is on fire")
	}),
	"refuse": ork.Task("refuse", func(ctx *ork.Context, _ any) (any, error) {
		return nil, fmt.Errorf("checking input: %w", ork.NonRetryable(errors.New("no values")))
	}),
	"wait": ork.Task("wait", func(ctx *ork.Context, _ any) (any, error) {
		fmt.Println("waiting")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped: %w", ctx.Err())
		case <-time.After(30 * time.Second):
			return "not cancelled", nil
		}
	}),
}

func runLaunchedHelper(name string) {
	task, ok := launchedTasks[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no launched test task %q\n", name)
		os.Exit(2)
	}
	ork.RunLaunched(task)
}

// launched is one run of the test binary as a launched task.
type launched struct {
	dir                    string
	input, output, errFile string
	cmd                    *exec.Cmd
	stdout, stderr         strings.Builder
}

func newLaunched(t *testing.T, task string, input string, env ...string) *launched {
	t.Helper()
	dir := t.TempDir()
	l := &launched{
		dir:     dir,
		input:   filepath.Join(dir, "input.json"),
		output:  filepath.Join(dir, "output.json"),
		errFile: filepath.Join(dir, "error.txt"),
	}
	if err := os.WriteFile(l.input, []byte(input), 0o644); err != nil {
		t.Fatal(err)
	}
	l.cmd = exec.Command(os.Args[0], "-test.run=^$")
	l.cmd.Env = append(os.Environ(),
		launchedHelperEnv+"="+task,
		"ORK_INPUT="+l.input, "ORK_OUTPUT="+l.output, "ORK_ERROR="+l.errFile,
		"ORK_RUN_ID=run-1", "ORK_WORKFLOW=wf", "ORK_TASK_NAME="+task, "ORK_TASK_RUN_ID=tr-1", "ORK_ATTEMPT=2")
	l.cmd.Env = append(l.cmd.Env, env...)
	l.cmd.Stdout, l.cmd.Stderr = &l.stdout, &l.stderr
	return l
}

func (l *launched) run(t *testing.T) int {
	t.Helper()
	err := l.cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func (l *launched) file(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "<missing>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestLaunchedWritesTheOutput(t *testing.T) {
	l := newLaunched(t, "sum", `{"values": [1, 2, 3]}`)
	if code := l.run(t); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, l.stderr.String())
	}
	if out := compactJSON(t, []byte(l.file(t, l.output))); out != `{"count":3,"sum":6}` {
		t.Errorf("output = %s", out)
	}
	if e := l.file(t, l.errFile); e != "<missing>" {
		t.Errorf("error file written on success: %q", e)
	}
	if !strings.Contains(l.stdout.String(), "msg=summing n=3") || !strings.Contains(l.stderr.String(), "level=ERROR msg=\"to stderr\"") {
		t.Errorf("logger lines missing: stdout %q, stderr %q", l.stdout.String(), l.stderr.String())
	}
}

func TestLaunchedReadsItsEnvironment(t *testing.T) {
	l := newLaunched(t, "facts", ``,
		"ORK_PARALLEL_INDEX=4", "ORK_PARALLEL_COUNT=9", "ORK_DEADLINE=2030-01-02T03:04:05Z")
	if code := l.run(t); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, l.stderr.String())
	}
	want := `{"attempt":2,"count":9,"deadline":"2030-01-02T03:04:05Z","has_deadline":true,"index":4,"run":"run-1","task":"facts","task_run":"tr-1","workflow":"wf"}`
	if out := compactJSON(t, []byte(l.file(t, l.output))); out != want {
		t.Errorf("output = %s\nwant       %s", out, want)
	}
}

func TestLaunchedErrorExitsOne(t *testing.T) {
	l := newLaunched(t, "fail", `null`)
	if code := l.run(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if e := l.file(t, l.errFile); e != "the disk is on fire" {
		t.Errorf("error file = %q", e)
	}
	if o := l.file(t, l.output); o != "<missing>" {
		t.Errorf("output written on failure: %q", o)
	}
}

func TestLaunchedNonRetryableExitsThree(t *testing.T) {
	l := newLaunched(t, "refuse", `{}`)
	if code := l.run(t); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	if e := l.file(t, l.errFile); e != "checking input: no values" {
		t.Errorf("error file = %q", e)
	}
}

// Input that does not fit the task's type cannot get better by retrying.
func TestLaunchedBadInputIsNonRetryable(t *testing.T) {
	l := newLaunched(t, "sum", `{"values": "three"}`)
	if code := l.run(t); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	if e := l.file(t, l.errFile); !strings.Contains(e, "cannot decode the input of task sum") {
		t.Errorf("error file = %q", e)
	}
}

func TestLaunchedSigtermCancelsTheContext(t *testing.T) {
	l := newLaunched(t, "wait", `{}`)
	l.cmd.Stdout = nil
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The task prints once it waits, so the signal cannot come before the
	// handler is installed.
	buf := make([]byte, len("waiting"))
	if _, err := stdout.Read(buf); err != nil || string(buf) != "waiting" {
		t.Fatalf("read %q: %v", buf, err)
	}
	if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = l.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("wait: %v, want exit 1", err)
	}
	if e := l.file(t, l.errFile); e != "stopped: context canceled" {
		t.Errorf("error file = %q", e)
	}
}

// Under ork's supervisor (a `workers`-less task whose file starts the test
// binary as a launched program), the output, the error text and the
// non-retryable exit code all reach the run.
func TestLaunchedUnderTheSupervisor(t *testing.T) {
	s := server(t)
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	script := func(task string) []byte {
		return fmt.Appendf(nil, "#!/bin/bash\nexport %s=%s\nexec %q -test.run='^$'\n", launchedHelperEnv, task, self)
	}
	wf := uniqueName("launched")
	s.deploy(t, fmt.Sprintf(`
name: %s
tasks:
  - name: sum
    file: sum.sh
    input:
      values: [1, 2, 3.5]
  - name: facts
    file: facts.sh
    parallel: 2
    timeout_seconds: 120
  - name: refuse
    file: refuse.sh
    retries: 2
  - name: fail
    file: fail.sh
    retries: 1
`, wf), map[string][]byte{
		"sum.sh": script("sum"), "facts.sh": script("facts"), "refuse.sh": script("refuse"), "fail.sh": script("fail"),
	})
	runID := s.start(t, wf, nil)
	run := s.wait(t, runID, 60*time.Second)
	if run.GetStatus() != "failed" {
		t.Fatalf("run ended %s, want failed (refuse and fail fail)", run.GetStatus())
	}

	sum := taskRuns(run, "sum")[0]
	if out := outputJSON(t, sum); sum.GetStatus() != "success" || out != `{"count":3,"sum":6.5}` {
		t.Errorf("sum: %s %s %q", sum.GetStatus(), out, sum.GetError())
	}
	for _, tr := range taskRuns(run, "facts") {
		want := `"attempt":1,"count":2,"deadline":"`
		out := outputJSON(t, tr)
		if !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf(`"index":%d`, tr.GetParallelIndex())) ||
			!strings.Contains(out, `"run":"`+runID+`"`) || !strings.Contains(out, `"task_run":"`+tr.GetId()+`"`) ||
			!strings.Contains(out, `"workflow":"`+wf+`"`) {
			t.Errorf("facts %d: %s", tr.GetParallelIndex(), out)
		}
	}
	refuse := taskRuns(run, "refuse")[0]
	if refuse.GetStatus() != "failed" || len(refuse.GetAttempts()) != 1 || !strings.Contains(refuse.GetError(), "checking input: no values") {
		t.Errorf("refuse: %s after %d attempts: %q", refuse.GetStatus(), len(refuse.GetAttempts()), refuse.GetError())
	}
	fail := taskRuns(run, "fail")[0]
	if fail.GetStatus() != "failed" || len(fail.GetAttempts()) != 2 || !strings.Contains(fail.GetError(), "the disk is on fire") {
		t.Errorf("fail: %s after %d attempts: %q", fail.GetStatus(), len(fail.GetAttempts()), fail.GetError())
	}
}
