package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"
)

// runLinktest measures a link's TCP throughput between two hosts, e.g.
// the heads' replication addresses, to compare DRBD's rate with:
//
//	tandem linktest --listen 10.10.0.12:5001     (on one head)
//	tandem linktest --to 10.10.0.12:5001         (on the other)
func runLinktest(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("linktest", flag.ContinueOnError)
	listen := fs.String("listen", "", "receive on this address, once, and exit")
	to := fs.String("to", "", "send to this address")
	mib := fs.Int("mib", 256, "MiB to send")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if (*listen == "") == (*to == "") || fs.NArg() != 0 {
		return usageError{errors.New("usage: tandem linktest --listen ADDR | --to ADDR [--mib 256]")}
	}
	if *listen != "" {
		return linkReceive(ctx, *listen)
	}
	return linkSend(ctx, *to, *mib)
}

// linkReceive counts what one sender sends, then answers the count, so
// the sender's clock covers delivery, not just its socket buffer.
func linkReceive(ctx context.Context, addr string) error {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c, "%d\n", n)
	return err
}

func linkSend(ctx context.Context, addr string, mib int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for range mib {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	var got int64
	if _, err := fmt.Fscan(c, &got); err != nil {
		return fmt.Errorf("no count from the receiver: %w", err)
	}
	took := time.Since(start)
	if want := int64(mib) << 20; got != want {
		return fmt.Errorf("the receiver counted %d bytes of %d", got, want)
	}
	fmt.Printf("%d MiB to %s in %.3f s: %.1f MB/s\n", mib, addr, took.Seconds(), float64(got)/took.Seconds()/1e6)
	return nil
}
