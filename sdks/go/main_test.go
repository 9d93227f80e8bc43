package ork_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ork "github.com/ork-run/ork/sdks/go"
	orkv1 "github.com/ork-run/ork/sdks/go/gen/orkv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// launchedHelperEnv makes the test binary act as a launched task program:
// its value names the task to run (see launchedTasks).
const launchedHelperEnv = "ORK_GO_SDK_TEST_LAUNCHED_TASK"

func TestMain(m *testing.M) {
	if name := os.Getenv(launchedHelperEnv); name != "" {
		runLaunchedHelper(name)
		return
	}
	code := m.Run()
	stopServer()
	os.Exit(code)
}

// testServer is one `ork dev` shared by the tests, started on first use.
type testServer struct {
	url     string
	token   string
	certs   *testCerts
	cmd     *exec.Cmd
	dataDir string
	logPath string
	conn    *grpc.ClientConn

	workflows orkv1.WorkflowServiceClient
	runs      orkv1.RunServiceClient
}

var (
	serverOnce sync.Once
	shared     *testServer
	serverErr  error
)

// orkBinary finds the server binary: $ORK_BIN, else the workspace's debug
// build.
func orkBinary() (string, error) {
	if bin := os.Getenv("ORK_BIN"); bin != "" {
		return bin, nil
	}
	bin, err := filepath.Abs("../../target/debug/ork")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s is missing: run `cargo build --bins -p ork-cli -p ork-worker` in the workspace, or set ORK_BIN", bin)
	}
	return bin, nil
}

// server returns the shared server, starting it the first time.
func server(t *testing.T) *testServer {
	t.Helper()
	serverOnce.Do(func() {
		var dataDir string
		if dataDir, serverErr = os.MkdirTemp("", "ork-go-sdk-test-"); serverErr == nil {
			shared, serverErr = startServer("127.0.0.1:0", dataDir)
		}
	})
	if serverErr != nil {
		t.Fatalf("cannot start the ork server: %v", serverErr)
	}
	return shared
}

var listening = regexp.MustCompile(`listening on (https?://\S+)`)

// startServer runs `ork dev` on listen with its state in dataDir; a server
// started again on the same folder sees the same workflows and runs.
func startServer(listen, dataDir string) (*testServer, error) {
	return startServerWith(listen, dataDir, serverSetup{})
}

// serverSetup makes a test server serve TLS (with certs) and require tokens
// (the first admin token goes to tokenFile); args are more flags.
type serverSetup struct {
	certs     *testCerts
	tokenFile string
	args      []string
}

func startServerWith(listen, dataDir string, setup serverSetup) (*testServer, error) {
	bin, err := orkBinary()
	if err != nil {
		return nil, err
	}
	s := &testServer{dataDir: dataDir, logPath: filepath.Join(dataDir, "server.log"), certs: setup.certs}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := []string{"dev", "--listen", listen, "--data-dir", filepath.Join(dataDir, "data"),
		"--heartbeat-interval", "1", "--heartbeat-timeout", "5"}
	if setup.certs != nil {
		args = append(args, "--tls-cert", setup.certs.serverCert, "--tls-key", setup.certs.serverKey)
	}
	if setup.tokenFile != "" {
		args = append(args, "--auth", "--bootstrap-token-file", setup.tokenFile)
	}
	s.cmd = exec.Command(bin, append(args, setup.args...)...)
	s.cmd.Stdout = logFile
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot run %s: %w", bin, err)
	}
	found := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			fmt.Fprintln(logFile, line)
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		// Keep the pipe drained once the scanner gives up on a long line.
		_, _ = io.Copy(logFile, stderr)
	}()
	select {
	case s.url = <-found:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		return nil, fmt.Errorf("ork dev did not announce its address within 30s; see %s", s.logPath)
	}
	creds := insecure.NewCredentials()
	if setup.certs != nil {
		if creds, err = setup.certs.clientCredentials("client"); err != nil {
			return nil, err
		}
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if setup.tokenFile != "" {
		data, err := os.ReadFile(setup.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("no admin token: %w", err)
		}
		s.token = strings.TrimSpace(string(data))
		options = append(options, grpc.WithPerRPCCredentials(testBearer(s.token)))
	}
	target := strings.TrimPrefix(strings.TrimPrefix(s.url, "http://"), "https://")
	s.conn, err = grpc.NewClient(target, options...)
	if err != nil {
		return nil, err
	}
	s.workflows = orkv1.NewWorkflowServiceClient(s.conn)
	s.runs = orkv1.NewRunServiceClient(s.conn)
	return s, nil
}

func stopServer() {
	if shared == nil {
		return
	}
	shared.stop(os.Interrupt)
	_ = os.RemoveAll(shared.dataDir)
}

// stop ends the server process with sig (killing it after 10s).
func (s *testServer) stop(sig os.Signal) {
	_ = s.conn.Close()
	_ = s.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// serverLogTail helps explain a failure.
func (s *testServer) logTail() string {
	data, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

var workflowSeq atomic.Int64

// uniqueName gives each test its own workflow and handler names, so that a
// worker left from another test can never take its tasks.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), workflowSeq.Add(1))
}

// deploy stores a workflow with the task files it names (path → content).
func (s *testServer) deploy(t *testing.T, yaml string, files ...map[string][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &orkv1.DeployWorkflowRequest{Yaml: yaml, Source: t.Name() + ".yaml"}
	if len(files) > 0 {
		req.Files = files[0]
	}
	if _, err := s.workflows.DeployWorkflow(ctx, req); err != nil {
		t.Fatalf("deploy failed: %v\n%s", err, yaml)
	}
}

func (s *testServer) start(t *testing.T, workflow string, input map[string]any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &orkv1.StartRunRequest{Workflow: workflow}
	if input != nil {
		v, err := structpb.NewValue(input)
		if err != nil {
			t.Fatal(err)
		}
		req.Input = v
	}
	resp, err := s.runs.StartRun(ctx, req)
	if err != nil {
		t.Fatalf("start run of %s: %v", workflow, err)
	}
	return resp.GetRun().GetId()
}

// wait polls the run until it ends.
func (s *testServer) wait(t *testing.T, runID string, timeout time.Duration) *orkv1.Run {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := s.runs.GetRun(ctx, &orkv1.GetRunRequest{Id: runID})
		cancel()
		if err != nil {
			t.Fatalf("get run %s: %v", runID, err)
		}
		switch resp.GetRun().GetStatus() {
		case "success", "failed", "cancelled":
			return resp.GetRun()
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s still %s after %s:\n%s\nserver log:\n%s", runID, resp.GetRun().GetStatus(), timeout,
				protojson.Format(resp.GetRun()), s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *testServer) logs(t *testing.T, runID string) []*orkv1.LogLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.runs.GetTaskLogs(ctx, &orkv1.GetTaskLogsRequest{RunId: runID})
	if err != nil {
		t.Fatalf("get logs of %s: %v", runID, err)
	}
	return resp.GetLines()
}

// runningWorker is a worker started by a test.
type runningWorker struct {
	cancel context.CancelFunc
	done   chan error
}

// startWorker runs a worker against the test server until the test ends.
func (s *testServer) startWorker(t *testing.T, tasks []ork.TaskDef, opts ...ork.Option) *runningWorker {
	t.Helper()
	return startWorkerAt(t, s.url, tasks, opts...)
}

// startWorkerAt runs a worker against any server URL until the test ends.
func startWorkerAt(t *testing.T, url string, tasks []ork.TaskDef, opts ...ork.Option) *runningWorker {
	t.Helper()
	opts = append([]ork.Option{ork.WithServer(url), ork.WithName(t.Name()), ork.WithLogger(testLogger(t))}, opts...)
	w := ork.NewWorker(tasks, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rw.done:
		case <-time.After(30 * time.Second):
			t.Errorf("the worker did not stop within 30s of its context being cancelled")
		}
	})
	return rw
}

// stop drains the worker and returns what Run returned.
func (w *runningWorker) stop(t *testing.T, timeout time.Duration) error {
	t.Helper()
	w.cancel()
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("worker.Run did not return within %s of cancelling its context", timeout)
		return nil
	}
}

// taskRuns returns the run's task runs named name.
func taskRuns(run *orkv1.Run, name string) []*orkv1.TaskRun {
	var out []*orkv1.TaskRun
	for _, tr := range run.GetTasks() {
		if tr.GetName() == name {
			out = append(out, tr)
		}
	}
	return out
}

// outputJSON renders a task run's output for comparisons.
func outputJSON(t *testing.T, tr *orkv1.TaskRun) string {
	t.Helper()
	data, err := protojson.Marshal(tr.GetOutput())
	if err != nil {
		t.Fatal(err)
	}
	// protojson's spacing is deliberately unstable; compare compact JSON.
	return compactJSON(t, data)
}

// testLogger shows a worker's own messages with the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func cancelRequest(id string) *orkv1.CancelRunRequest { return &orkv1.CancelRunRequest{Id: id} }
