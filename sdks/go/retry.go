package ork

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errStale means the server no longer considers the attempt current
// (FAILED_PRECONDITION): another attempt replaced it or it was cancelled, so
// the worker must stop it and report nothing.
var errStale = errors.New("the attempt is no longer current")

// backoff yields growing, jittered delays between retries.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min}
}

// wait sleeps for the next delay; it returns false when ctx ends first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.next = b.min }

// callFenced runs one fenced WorkerService call, retrying while the server is
// unavailable, and turns FAILED_PRECONDITION into errStale.
func callFenced(ctx context.Context, call func(ctx context.Context) error) error {
	b := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		err := call(ctx)
		switch status.Code(err) {
		case codes.OK:
			return nil
		case codes.FailedPrecondition:
			return errStale
		case codes.Unavailable:
			if !b.wait(ctx) {
				return err
			}
		default:
			return err
		}
	}
}
