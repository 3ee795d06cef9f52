// Package services defines the one interface every layer of a Tandem head
// implements, from the management network up to the virtual IP, and the
// typed errors they return. The graph that orders them lives in
// services/graph; the runtime that starts, monitors and stops them in
// services/supervise.
package services

import (
	"context"
	"errors"
	"fmt"
)

// Resource is one layer. Every method is idempotent (starting a started
// resource is a no-op), honours ctx's deadline, and returns *Error.
type Resource interface {
	// Name is unique within a graph, e.g. "raid10", "drbd", "nfs", "vip".
	Name() string
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	// Monitor probes the layer for real (a write + fsync + read-back, an
	// RPC NULL call, ...): nil means healthy.
	Monitor(ctx context.Context) error
}

// Promoter is a resource with roles (DRBD): Start brings it up as
// secondary, Promote makes it primary, Demote makes it secondary again.
type Promoter interface {
	Resource
	Promote(ctx context.Context) error
	Demote(ctx context.Context) error
}

// Warmer is a layer that a standby head can ready for a takeover
// without touching anything shared: Warm runs the layer's programs once
// in a harmless mode (a version or help query), so that their code is in
// memory, not on the compressed root, when the takeover needs it, and
// may start helpers that hold no state (rpcbind). On a cold head under
// emulation the first run of lvm alone costs a second.
type Warmer interface {
	Warm(ctx context.Context) error
}

// Kind classifies a failure, so the supervisor can decide what to do.
type Kind int

const (
	// Failed: the operation failed; a restart may help.
	Failed Kind = iota
	// Timeout: the operation did not finish before its deadline.
	Timeout
	// Config: the site config is wrong; retrying cannot help (maintenance).
	Config
	// Missing: hardware or a device the config names is absent (maintenance).
	Missing
	// Refused: a safety check said no (for example: the disk holds data
	// and the config does not allow formatting it). Never retried.
	Refused
	// Degraded: the layer serves, but with reduced redundancy.
	Degraded
)

func (k Kind) String() string {
	switch k {
	case Failed:
		return "failed"
	case Timeout:
		return "timeout"
	case Config:
		return "config"
	case Missing:
		return "missing"
	case Refused:
		return "refused"
	case Degraded:
		return "degraded"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Retryable reports whether a restart could help.
func (k Kind) Retryable() bool { return k == Failed || k == Timeout }

// Error is the error every Resource method returns.
type Error struct {
	Resource string // e.g. "drbd"
	Op       string // "start", "stop", "monitor", "promote", "demote"
	Kind     Kind
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s: %v", e.Resource, e.Op, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error.
func Errorf(resource, op string, kind Kind, format string, a ...any) *Error {
	return &Error{Resource: resource, Op: op, Kind: kind, Err: fmt.Errorf(format, a...)}
}

// KindOf returns the Kind of err: Timeout for a context deadline, Failed
// for an error that is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout
	}
	return Failed
}
