package nfs

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// inScope runs fn on an OS thread of its own whose UTS namespace has
// hostname scope. The kernel takes nfsd's NFSv4 server scope from the
// nodename of whoever starts the threads, and bookworm's rpc.nfsd has no
// -S to set it; a process fn starts from this thread inherits the
// namespace. Both heads so present the same scope (the pair's name) and
// clients reclaim their state after a failover.
func inScope(scope string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, and its namespace, end with this
		// goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			errc <- fmt.Errorf("new UTS namespace for the server scope: %w", err)
			return
		}
		if err := unix.Sethostname([]byte(scope)); err != nil {
			errc <- fmt.Errorf("server scope %q: %w", scope, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
