package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
)

// Console records a VM's serial output to a file and lets tests wait for
// lines, expect-style.
type Console struct {
	f *os.File

	mu     sync.Mutex
	buf    bytes.Buffer
	notify chan struct{}
	err    error
}

func newConsole(path string, appendTo bool) (*Console, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if appendTo {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("qemu: console log: %w", err)
	}
	return &Console{f: f, notify: make(chan struct{})}, nil
}

// Path is the console log file.
func (c *Console) Path() string { return c.f.Name() }

func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	_, _ = c.f.Write(p)
	close(c.notify)
	c.notify = make(chan struct{})
	return len(p), nil
}

func (c *Console) closeWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
	_ = c.f.Close()
	close(c.notify)
	c.notify = make(chan struct{})
}

// Text returns everything printed so far.
func (c *Console) Text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// Tail returns the last n lines.
func (c *Console) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(c.Text(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Len is the number of bytes printed so far: a mark for WaitForAfter.
func (c *Console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Len()
}

// WaitFor waits until the output matches re and returns the matching line.
// It fails when ctx ends or QEMU exits first.
func (c *Console) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	return c.WaitForAfter(ctx, 0, re)
}

// WaitForAfter is WaitFor on the output after the first off bytes (from
// Len), e.g. to see a line again after a reset.
func (c *Console) WaitForAfter(ctx context.Context, off int, re *regexp.Regexp) (string, error) {
	for {
		c.mu.Lock()
		text, ch, cerr := c.buf.String(), c.notify, c.err
		c.mu.Unlock()
		text = text[min(off, len(text)):]
		if loc := re.FindStringIndex(text); loc != nil {
			start := strings.LastIndexByte(text[:loc[0]], '\n') + 1
			end := strings.IndexByte(text[loc[1]:], '\n')
			if end < 0 {
				end = len(text) - loc[1]
			}
			return strings.TrimRight(text[start:loc[1]+end], "\r"), nil
		}
		if cerr != nil {
			return "", fmt.Errorf("waiting for %q: %w", re, cerr)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q: %w", re, ctx.Err())
		case <-ch:
		}
	}
}
