package ork_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ork "github.com/ork-run/ork/sdks/go"
	orkv1 "github.com/ork-run/ork/sdks/go/gen/orkv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// testCerts are PEM files made at test time by `ork-test-certs` (next to the
// ork binary): a CA, a server certificate for localhost and 127.0.0.1 and a
// client certificate it signed, and another CA with its own client.
type testCerts struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	otherClientCert, otherClientKey                  string
}

func makeCerts(t *testing.T) *testCerts {
	t.Helper()
	bin, err := orkBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tool := filepath.Join(filepath.Dir(bin), "ork-test-certs")
	if out, err := exec.Command(tool, dir).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s (build it with `cargo build --bins -p ork-tests`)", tool, err, out)
	}
	at := func(name string) string { return filepath.Join(dir, name) }
	return &testCerts{
		ca: at("ca.pem"), serverCert: at("server.pem"), serverKey: at("server.key"),
		clientCert: at("client.pem"), clientKey: at("client.key"),
		otherClientCert: at("other-client.pem"), otherClientKey: at("other-client.key"),
	}
}

// clientCredentials trusts the test CA and presents the named client
// certificate ("client", "other-client", or "" for none).
func (c *testCerts) clientCredentials(client string) (credentials.TransportCredentials, error) {
	pem, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	config := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	pairs := map[string][2]string{"client": {c.clientCert, c.clientKey}, "other-client": {c.otherClientCert, c.otherClientKey}}
	if files, ok := pairs[client]; ok {
		pair, err := tls.LoadX509KeyPair(files[0], files[1])
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config), nil
}

type testBearer string

func (b testBearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (testBearer) RequireTransportSecurity() bool { return false }

// secureServer starts an `ork dev` that serves TLS and requires tokens.
func secureServer(t *testing.T, certs *testCerts, args ...string) *testServer {
	t.Helper()
	dir := t.TempDir()
	s, err := startServerWith("127.0.0.1:0", dir, serverSetup{certs: certs, tokenFile: filepath.Join(dir, "admin.token"), args: args})
	if err != nil {
		t.Fatalf("cannot start a TLS server: %v", err)
	}
	t.Cleanup(func() { s.stop(os.Interrupt) })
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("the server does not announce https: %s", s.url)
	}
	return s
}

func (s *testServer) createToken(t *testing.T, name, role string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := orkv1.NewTokenServiceClient(s.conn).CreateToken(ctx, &orkv1.CreateTokenRequest{Name: name, Role: role})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return resp.GetSecret()
}

// A pool worker reaches a TLS server with a worker token and runs a task;
// the token and the CA come from the variables every ork client reads.
func TestWorkerOverTLSWithAToken(t *testing.T) {
	certs := makeCerts(t)
	s := secureServer(t, certs)
	token := s.createToken(t, "go-pool", "worker")
	t.Setenv("ORK_TOKEN", token)
	t.Setenv("ORK_CA_CERT", certs.ca)
	wf, handler := uniqueName("tls"), uniqueName("tls")
	s.deploy(t, fmt.Sprintf("name: %s\ntasks:\n  - name: hi\n    executor: workers\n    handler: %s\n    input: {who: tls}\n", wf, handler))
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(_ *ork.Context, in map[string]any) (map[string]any, error) {
		return map[string]any{"hello": in["who"]}, nil
	})})
	run := s.wait(t, s.start(t, wf, nil), 60*time.Second)
	if run.GetStatus() != "success" {
		t.Fatalf("run %s: %v\n%s", run.GetStatus(), run, s.logTail())
	}
	if got := outputJSON(t, taskRuns(run, "hi")[0]); got != `{"hello":"tls"}` {
		t.Fatalf("output %s", got)
	}
}

// A token of another role is refused for good: Run returns the error.
func TestAWorkerWithTheWrongRoleIsRefused(t *testing.T) {
	certs := makeCerts(t)
	s := secureServer(t, certs)
	viewer := s.createToken(t, "go-viewer", "viewer")
	w := ork.NewWorker([]ork.TaskDef{ork.Task("x", func(_ *ork.Context, in any) (any, error) { return in, nil })},
		ork.WithServer(s.url), ork.WithToken(viewer), ork.WithCACert(certs.ca), ork.WithLogger(testLogger(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := w.Run(ctx)
	if status.Code(errorsCause(err)) != codes.PermissionDenied || !strings.Contains(err.Error(), "worker token") {
		t.Fatalf("want a permission error naming the worker token, got %v", err)
	}
}

// errorsCause unwraps to the gRPC status error.
func errorsCause(err error) error {
	for err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		type unwrapper interface{ Unwrap() error }
		u, ok := err.(unwrapper)
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
	return err
}

// Under mutual TLS a worker with the right client certificate works and a
// client without one, or with one from another CA, cannot even connect.
func TestMutualTLS(t *testing.T) {
	certs := makeCerts(t)
	s := secureServer(t, certs, "--tls-client-ca", certs.ca,
		"--tls-worker-cert", certs.clientCert, "--tls-worker-key", certs.clientKey)
	token := s.createToken(t, "go-mtls", "worker")
	wf, handler := uniqueName("mtls"), uniqueName("mtls")
	s.deploy(t, fmt.Sprintf("name: %s\ntasks:\n  - name: hi\n    executor: workers\n    handler: %s\n", wf, handler))
	s.startWorker(t, []ork.TaskDef{ork.Task(handler, func(_ *ork.Context, _ any) (string, error) { return "ok", nil })},
		ork.WithToken(token), ork.WithCACert(certs.ca), ork.WithClientCert(certs.clientCert, certs.clientKey))
	run := s.wait(t, s.start(t, wf, nil), 60*time.Second)
	if run.GetStatus() != "success" {
		t.Fatalf("run %s: %v\n%s", run.GetStatus(), run, s.logTail())
	}
	target := strings.TrimPrefix(s.url, "https://")
	for _, client := range []string{"", "other-client"} {
		creds, err := certs.clientCredentials(client)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(testBearer(s.token)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err = orkv1.NewTokenServiceClient(conn).ListTokens(ctx, &orkv1.ListTokensRequest{})
		cancel()
		_ = conn.Close()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("client %q: want UNAVAILABLE (refused handshake), got %v", client, err)
		}
	}
}

// Settings that cannot work are refused before anything connects.
func TestTLSSettingsNeedHTTPS(t *testing.T) {
	w := ork.NewWorker([]ork.TaskDef{ork.Task("x", func(_ *ork.Context, in any) (any, error) { return in, nil })},
		ork.WithServer("http://127.0.0.1:1"), ork.WithCACert("/nonexistent/ca.pem"))
	err := w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not https://") {
		t.Fatalf("want an error about https, got %v", err)
	}
}
