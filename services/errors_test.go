package services

import (
	"errors"
	"fmt"
	"testing"
)

func TestSentinel(t *testing.T) {
	busy := Sentinel("device busy", ErrInUse)
	tests := []struct {
		name    string
		err     error
		is      []error
		isNot   []error
		message string
	}{
		{"own message", busy, []error{busy, ErrInUse}, []error{ErrNotFound}, "device busy"},
		{"wrapped with context", fmt.Errorf("stop /dev/md0: %w", busy), []error{busy, ErrInUse}, []error{ErrHasData}, "stop /dev/md0: device busy"},
		{"inside a layer's Error", &Error{Resource: "raid10", Op: "stop", Kind: Failed, Err: busy}, []error{ErrInUse}, []error{ErrToolFailed}, "raid10 stop: failed: device busy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, e := range tt.is {
				if !errors.Is(tt.err, e) {
					t.Errorf("errors.Is(%v, %v) = false", tt.err, e)
				}
			}
			for _, e := range tt.isNot {
				if errors.Is(tt.err, e) {
					t.Errorf("errors.Is(%v, %v) = true", tt.err, e)
				}
			}
			if tt.err.Error() != tt.message {
				t.Errorf("message %q, want %q", tt.err.Error(), tt.message)
			}
		})
	}
}
