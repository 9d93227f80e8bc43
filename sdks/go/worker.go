package ork

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	orkv1 "github.com/ork-run/ork/sdks/go/gen/orkv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Version is the SDK's version, sent to the server when a worker attaches.
const Version = "0.1.0"

// DefaultServer is the server a worker talks to when neither [WithServer]
// nor ORK_SERVER says otherwise.
const DefaultServer = "http://127.0.0.1:7400"

const (
	// closeTimeout bounds the wait for the server to end a drained session.
	closeTimeout = 5 * time.Second
	// drainNoticeTimeout bounds the wait for the server to confirm a drain.
	drainNoticeTimeout = 10 * time.Second
)

// Option configures a [Worker].
type Option func(*config)

type config struct {
	server string
	slots  int
	name   string
	logger *slog.Logger
	// Authentication and TLS (see WithToken and friends).
	token      string
	caCert     string
	clientCert string
	clientKey  string
	serverName string
}

// WithServer sets the server's URL, e.g. http://127.0.0.1:7400 (https URLs
// use TLS). The default is $ORK_SERVER, else [DefaultServer].
func WithServer(url string) Option { return func(c *config) { c.server = url } }

// WithSlots sets how many tasks the worker runs at once (default 1; values
// below 1 mean 1). The server never assigns more.
func WithSlots(n int) Option { return func(c *config) { c.slots = max(n, 1) } }

// WithName sets the name the worker shows to people (default host:pid).
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithToken sets the worker token sent with every call (make one with
// `ork token create --role worker`). The default is $ORK_TOKEN.
func WithToken(token string) Option { return func(c *config) { c.token = token } }

// WithCACert sets a PEM file of the CA (or self-signed certificate) an
// https:// server is checked against. The default is $ORK_CA_CERT, else the
// system's roots.
func WithCACert(path string) Option { return func(c *config) { c.caCert = path } }

// WithClientCert sets a PEM client certificate and its key, for servers that
// require mutual TLS. The defaults are $ORK_CLIENT_CERT and $ORK_CLIENT_KEY.
func WithClientCert(cert, key string) Option {
	return func(c *config) { c.clientCert, c.clientKey = cert, key }
}

// WithServerName sets the name the server's certificate is checked for, when
// it differs from the URL's host. The default is $ORK_TLS_SERVER_NAME.
func WithServerName(name string) Option { return func(c *config) { c.serverName = name } }

// WithLogger sets where the worker logs about itself (connections, failed
// reports); the default is [slog.Default]. Task logs go to the server.
func WithLogger(logger *slog.Logger) Option { return func(c *config) { c.logger = logger } }

// Worker is a long-lived pool worker: it serves its tasks to the server over
// one stream. Make one with [NewWorker] and start it with [Worker.Run].
type Worker struct {
	cfg   config
	tasks map[string]*TaskDef
}

// NewWorker returns a worker serving tasks, by their names. It panics when
// tasks is empty or two tasks share a name, since both are programming
// errors.
func NewWorker(tasks []TaskDef, opts ...Option) *Worker {
	cfg := config{
		server:     os.Getenv("ORK_SERVER"),
		slots:      1,
		logger:     slog.Default(),
		token:      strings.TrimSpace(os.Getenv("ORK_TOKEN")),
		caCert:     os.Getenv("ORK_CA_CERT"),
		clientCert: os.Getenv("ORK_CLIENT_CERT"),
		clientKey:  os.Getenv("ORK_CLIENT_KEY"),
		serverName: os.Getenv("ORK_TLS_SERVER_NAME"),
	}
	if cfg.server == "" {
		cfg.server = DefaultServer
	}
	if host, err := os.Hostname(); err == nil {
		cfg.name = fmt.Sprintf("%s:%d", host, os.Getpid())
	} else {
		cfg.name = fmt.Sprintf("pid %d", os.Getpid())
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	if len(tasks) == 0 {
		panic("ork: a worker needs at least one task")
	}
	byName := make(map[string]*TaskDef, len(tasks))
	for i := range tasks {
		t := &tasks[i]
		if t.call == nil {
			panic("ork: a worker task was not made with ork.Task")
		}
		if _, dup := byName[t.name]; dup {
			panic(fmt.Sprintf("ork: two tasks are named %q", t.name))
		}
		byName[t.name] = t
	}
	return &Worker{cfg: cfg, tasks: byName}
}

// Run attaches to the server and runs the tasks it assigns until ctx is
// cancelled; it then drains: it tells the server to send nothing more,
// finishes the running tasks, closes the stream and returns nil. When the
// stream breaks, Run stops the running tasks (the server retries them
// elsewhere) and attaches again with backoff, for as long as ctx lives. It
// returns an error only when the server refuses the worker for good (for
// example, a server without pool support).
func (w *Worker) Run(ctx context.Context) error {
	conn, err := dial(&w.cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := orkv1.NewWorkerServiceClient(conn)
	b := newBackoff(200*time.Millisecond, 10*time.Second)
	for {
		attached, err := w.session(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if !attached && isPermanent(err) {
			return fmt.Errorf("the server at %s refused the worker: %w", w.cfg.server, err)
		}
		if attached {
			b.reset()
		}
		w.cfg.logger.Warn("worker session ended; reconnecting", "server", w.cfg.server, "error", err)
		if !b.wait(ctx) {
			return nil
		}
	}
}

// isPermanent tells the errors that reconnecting cannot fix.
func isPermanent(err error) bool {
	switch status.Code(err) {
	case codes.Unimplemented, codes.InvalidArgument, codes.PermissionDenied,
		codes.Unauthenticated, codes.FailedPrecondition:
		return true
	}
	return false
}

// dial opens a lazy connection to an http:// or https:// server URL (a bare
// host:port is taken as plain http), with the token on every call.
func dial(cfg *config) (*grpc.ClientConn, error) {
	server := cfg.server
	target := server
	secure := false
	if u, err := url.Parse(server); err == nil && u.Host != "" {
		switch u.Scheme {
		case "http":
			target = u.Host
		case "https":
			target = u.Host
			secure = true
		default:
			return nil, fmt.Errorf("server URL %q must start with http:// or https://", server)
		}
	}
	creds := insecure.NewCredentials()
	if secure {
		tlsConfig, err := cfg.tlsConfig()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tlsConfig)
	} else if cfg.caCert != "" || cfg.clientCert != "" || cfg.clientKey != "" || cfg.serverName != "" {
		return nil, fmt.Errorf("TLS settings are given (a CA, a client certificate or a server name) but the server URL %q is not https://; use https://, or unset ORK_CA_CERT / ORK_CLIENT_CERT / ORK_CLIENT_KEY / ORK_TLS_SERVER_NAME", server)
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if cfg.token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer(cfg.token)))
	}
	conn, err := grpc.NewClient(target, options...)
	if err != nil {
		return nil, fmt.Errorf("bad server URL %q: %w", server, err)
	}
	return conn, nil
}

// tlsConfig trusts the configured CA (else the system's roots) and presents
// the client certificate, if any.
func (c *config) tlsConfig() (*tls.Config, error) {
	out := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
	if c.caCert != "" {
		pem, err := os.ReadFile(c.caCert)
		if err != nil {
			return nil, fmt.Errorf("cannot read the CA certificate %s: %w", c.caCert, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the CA certificate %s holds no PEM certificate", c.caCert)
		}
		out.RootCAs = pool
	}
	switch {
	case c.clientCert != "" && c.clientKey != "":
		pair, err := tls.LoadX509KeyPair(c.clientCert, c.clientKey)
		if err != nil {
			return nil, fmt.Errorf("cannot load the client certificate %s and key %s: %w", c.clientCert, c.clientKey, err)
		}
		out.Certificates = []tls.Certificate{pair}
	case c.clientCert != "" || c.clientKey != "":
		return nil, fmt.Errorf("a client certificate needs its key and the key its certificate: give both")
	}
	return out, nil
}

// bearer sends `authorization: Bearer TOKEN` with every call. It works over
// plain connections too: a loopback server without TLS may require tokens.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// attemptKey names an attempt within a session.
type attemptKey struct {
	taskRunID string
	attempt   uint32
}

// session runs one attach on one stream until it ends. It reports whether
// the server accepted the attach; after a drain (ctx cancelled) it returns
// once every task has finished.
func (w *Worker) session(ctx context.Context, client orkv1.WorkerServiceClient) (attached bool, err error) {
	// The stream outlives ctx: cancelling ctx means drain, not abort.
	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	stream, err := client.Session(streamCtx)
	if err != nil {
		return false, err
	}
	handlers := make([]string, 0, len(w.tasks))
	for name := range w.tasks {
		handlers = append(handlers, name)
	}
	sort.Strings(handlers)
	err = stream.Send(&orkv1.SessionRequest{Message: &orkv1.SessionRequest_Attach{Attach: &orkv1.WorkerAttach{
		Name:     w.cfg.name,
		Handlers: handlers,
		Slots:    uint32(w.cfg.slots),
		Sdk:      "go/" + Version,
	}}})
	if err != nil {
		return false, recvError(stream, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	hello := first.GetAttached()
	if hello == nil {
		return false, fmt.Errorf("the server's first session message was %T, not attached", first.GetMessage())
	}
	if !hello.GetSessionReports() {
		return false, status.Error(codes.FailedPrecondition, "the server does not take reports over the session; upgrade the server")
	}
	log := w.cfg.logger.With("session", hello.GetSessionId())
	log.Info("worker attached", "server", w.cfg.server, "handlers", handlers, "slots", w.cfg.slots)

	var sendMu sync.Mutex
	send := func(m *orkv1.SessionRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	reports := newReporter(send)
	// Whatever is still waiting hears the session ended.
	defer reports.close()

	// The receiver answers pings and routes report answers itself, so a busy
	// main loop cannot make the worker look dead or stall a report.
	msgs := make(chan *orkv1.SessionResponse)
	recvErr := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if p := m.GetPing(); p != nil {
				// A failed send surfaces as a failed Recv.
				_ = send(&orkv1.SessionRequest{Message: &orkv1.SessionRequest_Pong{Pong: &orkv1.WorkerPong{Nonce: p.GetNonce()}}})
				continue
			}
			if r := m.GetResult(); r != nil {
				reports.answered(r)
				continue
			}
			select {
			case msgs <- m:
			case <-quit:
				return
			}
		}
	}()

	// Tasks get their own root context: draining lets them finish, and only
	// the server (or a broken stream) cancels them.
	tasksCtx, cancelTasks := context.WithCancel(context.Background())
	defer cancelTasks()
	running := make(map[attemptKey]*attemptRun)
	finished := make(chan attemptKey)
	waitAll := func() {
		for len(running) > 0 {
			delete(running, <-finished)
		}
	}

	draining := false
	drainSignal := ctx.Done()
	var drainNotice <-chan time.Time
	noticed := false
	// While draining, the loop also looks every so often whether the last
	// reports were answered (answers arrive on the receiver's side).
	var settle <-chan time.Time
	for {
		// Assignments sent before the server saw the drain were started on
		// its side: wait for its notice that none follow, for the running
		// tasks, and for the answers to their reports.
		if draining && noticed && len(running) == 0 && reports.pending() == 0 {
			_ = stream.CloseSend()
			select {
			case <-recvErr:
			case <-time.After(closeTimeout):
			}
			log.Info("worker drained")
			return true, nil
		}
		select {
		case <-drainSignal:
			drainSignal = nil
			draining = true
			drainNotice = time.After(drainNoticeTimeout)
			ticker := time.NewTicker(50 * time.Millisecond)
			defer ticker.Stop()
			settle = ticker.C
			log.Info("worker draining", "running", len(running))
			if err := send(&orkv1.SessionRequest{Message: &orkv1.SessionRequest_Drain{Drain: &orkv1.WorkerDrain{}}}); err != nil {
				// The stream is gone; Recv reports why.
				continue
			}
		case <-drainNotice:
			noticed = true
		case <-settle:
		case key := <-finished:
			delete(running, key)
		case err := <-recvErr:
			if err == io.EOF {
				err = errors.New("the server closed the session")
			}
			// The server fails this session's attempts as lost when the
			// stream ends, so their results would be refused: stop them and
			// wait, so that a new attach never runs more than its slots.
			for _, run := range running {
				run.stop("the session ended")
			}
			reports.close()
			waitAll()
			return true, err
		case m := <-msgs:
			switch msg := m.GetMessage().(type) {
			case *orkv1.SessionResponse_Assignment:
				ref, spec := msg.Assignment.GetAttempt(), msg.Assignment.GetSpec()
				key := attemptKey{ref.GetTaskRunId(), ref.GetAttempt()}
				if _, dup := running[key]; dup {
					log.Warn("the server assigned an attempt twice; ignoring the repeat", "task_run_id", key.taskRunID, "attempt", key.attempt)
					continue
				}
				if len(running) >= w.cfg.slots {
					log.Warn("the server assigned more attempts than the worker has slots", "slots", w.cfg.slots)
				}
				run := newAttemptRun(tasksCtx, reports, ref, spec, w.tasks[spec.GetHandler()], log)
				running[key] = run
				go func() {
					run.execute()
					finished <- key
				}()
			case *orkv1.SessionResponse_Cancel:
				ref := msg.Cancel.GetAttempt()
				if run, ok := running[attemptKey{ref.GetTaskRunId(), ref.GetAttempt()}]; ok {
					run.stop(msg.Cancel.GetReason())
				}
			case *orkv1.SessionResponse_Drained:
				noticed = true
			case *orkv1.SessionResponse_Attached:
				log.Warn("the server confirmed the attach twice")
			}
		}
	}
}

// recvError returns the stream's real status after a failed Send: gRPC
// reports io.EOF from Send and the reason from Recv.
func recvError(stream orkv1.WorkerService_SessionClient, sendErr error) error {
	if sendErr != io.EOF {
		return sendErr
	}
	_, err := stream.Recv()
	if err == nil || err == io.EOF {
		return sendErr
	}
	return err
}
