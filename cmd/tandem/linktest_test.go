package main

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestLinktest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	done := make(chan error, 1)
	go func() { done <- linkReceive(ctx, addr) }()
	var sendErr error
	for range 50 { // the receiver may not listen yet
		if sendErr = linkSend(ctx, addr, 8); sendErr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sendErr != nil {
		t.Fatalf("send: %v", sendErr)
	}
	if err := <-done; err != nil {
		t.Fatalf("receive: %v", err)
	}
	if err := linkSend(ctx, addr, 1); err == nil {
		t.Error("sending with nobody listening succeeded")
	}
}
