package graph

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for a zero Policy field. They follow Pacemaker's usual
// operation settings, tightened for a NAS: a failover must finish well
// inside an NFS client's retransmit window, so nothing waits minutes.
const (
	// DefaultStartTimeout bounds one Start. Assembling RAID10 or
	// connecting DRBD takes seconds; a minute means something hangs.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopTimeout bounds one Stop; a stop that hangs past it is
	// reported and the caller decides about the hardware watchdog.
	DefaultStopTimeout = 60 * time.Second
	// DefaultMonitorInterval is the pause between two probes.
	DefaultMonitorInterval = 5 * time.Second
	// DefaultMonitorTimeout bounds one probe. It is longer than the
	// interval on purpose: a write + fsync on a busy array can be slow,
	// and the next probe is only scheduled after this one ends.
	DefaultMonitorTimeout = 10 * time.Second
	// DefaultMigrationThreshold: the third failure within the failure
	// timeout hands the node to the HA layer (failover).
	DefaultMigrationThreshold = 3
	// DefaultFailureTimeout: failures older than this are forgotten.
	DefaultFailureTimeout = 10 * time.Minute
	// DefaultBackoffInitial, DefaultBackoffMax and DefaultBackoffMultiplier
	// space local restarts out: 1 s, 2 s, 4 s, ... up to 30 s.
	DefaultBackoffInitial    = time.Second
	DefaultBackoffMax        = 30 * time.Second
	DefaultBackoffMultiplier = 2.0
)

// BackoffPolicy spaces out the local restarts of a failing resource.
type BackoffPolicy struct {
	Initial    time.Duration // delay before the first restart
	Max        time.Duration // cap on the delay
	Multiplier float64       // growth per restart; >= 1
}

// Delay returns the pause before restart number n (0 for the first),
// Initial * Multiplier^n, capped at Max.
func (b BackoffPolicy) Delay(n int) time.Duration {
	d := float64(b.Initial)
	for i := 0; i < n && d < float64(b.Max) && b.Multiplier > 1; i++ {
		d *= b.Multiplier
	}
	if d > float64(b.Max) {
		return b.Max
	}
	return time.Duration(d)
}

// Policy is how the supervisor runs one node: Pacemaker's operation
// timeouts, migration-threshold and failure-timeout, and a restart
// backoff. A zero field takes its Default* value.
type Policy struct {
	StartTimeout    time.Duration
	StopTimeout     time.Duration
	MonitorInterval time.Duration
	MonitorTimeout  time.Duration
	// MigrationThreshold is the number of failures within FailureTimeout
	// at which the supervisor stops restarting and escalates (failover).
	// Negative: never escalate, restart forever.
	MigrationThreshold int
	// FailureTimeout is how long a failure counts. Negative: forever.
	FailureTimeout time.Duration
	Backoff        BackoffPolicy
}

// WithDefaults returns p with every zero field set to its default.
func (p Policy) WithDefaults() Policy {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&p.StartTimeout, DefaultStartTimeout)
	def(&p.StopTimeout, DefaultStopTimeout)
	def(&p.MonitorInterval, DefaultMonitorInterval)
	def(&p.MonitorTimeout, DefaultMonitorTimeout)
	def(&p.FailureTimeout, DefaultFailureTimeout)
	def(&p.Backoff.Initial, DefaultBackoffInitial)
	def(&p.Backoff.Max, DefaultBackoffMax)
	if p.MigrationThreshold == 0 {
		p.MigrationThreshold = DefaultMigrationThreshold
	}
	if p.Backoff.Multiplier == 0 {
		p.Backoff.Multiplier = DefaultBackoffMultiplier
	}
	return p
}

// validate checks a defaulted policy. Negative timeouts would make every
// operation fail at once, which is never what a config meant.
func (p Policy) validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"StartTimeout", p.StartTimeout},
		{"StopTimeout", p.StopTimeout},
		{"MonitorInterval", p.MonitorInterval},
		{"MonitorTimeout", p.MonitorTimeout},
		{"Backoff.Initial", p.Backoff.Initial},
		{"Backoff.Max", p.Backoff.Max},
	} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", f.name, f.d))
		}
	}
	if p.Backoff.Max < p.Backoff.Initial {
		errs = append(errs, fmt.Errorf("Backoff.Max %s is below Backoff.Initial %s", p.Backoff.Max, p.Backoff.Initial))
	}
	if p.Backoff.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("Backoff.Multiplier %g is below 1", p.Backoff.Multiplier))
	}
	return errors.Join(errs...)
}
