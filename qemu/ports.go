package qemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Port blocks: each lab takes a block of UDP ports on 127.0.0.1 under a
// lock file, so two labs (or test processes) side by side never pick the
// same port. Binding :0 and handing the port to QEMU would leave a window
// in which another lab's :0 gets it too; the blocks lie below the
// kernel's ephemeral range, so no :0 bind anywhere lands in them either.
const (
	portLow   = 20000
	portHigh  = 32768 // Linux's default ip_local_port_range starts here
	blockSize = 32
)

// PortBlock is a reserved block of loopback UDP ports.
type PortBlock struct {
	Base int
	next int
	lock *os.File
}

// portLockDir holds one lock file per block, shared by all users.
var portLockDir = filepath.Join(os.TempDir(), "tandem-lab-ports")

// ReservePorts locks a free block of ports. Release it (Lab.Close does).
func ReservePorts() (*PortBlock, error) {
	if err := os.MkdirAll(portLockDir, 0o777); err != nil {
		return nil, fmt.Errorf("qemu: port locks: %w", err)
	}
	_ = os.Chmod(portLockDir, 0o1777) // other users' labs lock here too
	lo, hi := ephemeralRange()
	n := (portHigh - portLow) / blockSize
	first := rand.IntN(n) // spread concurrent labs to avoid lock contention
	var lastErr error
	for i := 0; i < n; i++ {
		base := portLow + (first+i)%n*blockSize
		if base+blockSize > lo && base <= hi {
			continue
		}
		b, err := tryBlock(base)
		if err == nil {
			return b, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("qemu: no free block of %d loopback UDP ports in %d-%d: %v", blockSize, portLow, portHigh, lastErr)
}

func tryBlock(base int) (*PortBlock, error) {
	p := filepath.Join(portLockDir, strconv.Itoa(base)+".lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	_ = f.Chmod(0o666)
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("block %d: %w", base, err)
	}
	// Something outside the lab may use a port: probe them all.
	for port := base; port < base+blockSize; port++ {
		c, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("block %d: %w", base, err)
		}
		c.Close()
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return &PortBlock{Base: base, next: base, lock: f}, nil
}

// Next returns the next unused port of the block.
func (b *PortBlock) Next() (int, error) {
	if b.next >= b.Base+blockSize {
		return 0, errors.New("qemu: port block exhausted")
	}
	b.next++
	return b.next - 1, nil
}

// Release gives the block back.
func (b *PortBlock) Release() {
	if b != nil && b.lock != nil {
		b.lock.Close() // drops the flock
		b.lock = nil
	}
}

// ephemeralRange is the kernel's range for :0 binds.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		if l, err := strconv.Atoi(f[0]); err == nil {
			lo = l
		}
		if h, err := strconv.Atoi(f[1]); err == nil {
			hi = h
		}
	}
	return
}
