// Package labagent is the lab's guest agent: the guest half (Serve) runs
// commands that the host half (Client) sends over a virtio-serial port.
//
// The port exists only on lab boards (board lab_channel) and in QEMU; it
// is never a network listener, so a production image has no way in.
//
// The protocol is JSON lines: the host writes a Request per line, the
// guest answers each with a Result carrying the same id, in any order
// (requests run concurrently).
package labagent

import "time"

// Request asks the guest to run one command.
type Request struct {
	ID   string   `json:"id"`
	Argv []string `json:"argv"`
	// Env is added to the agent's base environment (PATH, HOME).
	Env []string `json:"env,omitempty"`
	// Timeout kills the command's process group; 0 means DefaultTimeout.
	Timeout time.Duration `json:"timeout,omitempty"` // nanoseconds
	Stdin   []byte        `json:"stdin,omitempty"`   // base64 in JSON
}

// Result is a finished command.
type Result struct {
	ID string `json:"id"`
	// Exit is the exit status; -1 if the command was killed by a signal
	// (TimedOut says whether by the timeout) or could not start (Error).
	Exit     int           `json:"exit"`
	Stdout   []byte        `json:"stdout,omitempty"`
	Stderr   []byte        `json:"stderr,omitempty"`
	Duration time.Duration `json:"duration"` // nanoseconds
	TimedOut bool          `json:"timed_out,omitempty"`
	// Error is set when the command could not run at all (not found,
	// bad request).
	Error string `json:"error,omitempty"`
}

const (
	// DefaultTimeout applies when a request names none.
	DefaultTimeout = 5 * time.Minute
	// MaxOutput caps each of stdout and stderr; more is dropped and
	// marked, so that a runaway command cannot exhaust the guest's memory.
	MaxOutput = 8 << 20
	// maxLine bounds one request line (stdin travels inside it).
	maxLine = 64 << 20
)
