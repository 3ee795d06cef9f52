// Package workload is the lab client's I/O checker: it writes checksummed,
// sequence-numbered records through a mount, each acknowledged by fsync,
// then reads them back. It reports I/O errors, lost or corrupt
// acknowledged records, and the longest stall between two acknowledged
// writes — what a VDI guest would feel during a failover.
package workload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

const (
	magic      = 0x54414e44 // "TAND"
	headerSize = 4 + 8 + 8 + 4
	// MinRecordSize leaves room for the header and some payload.
	MinRecordSize = 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configure a run.
type Options struct {
	Dir        string        // a directory on the mount under test
	Duration   time.Duration // how long to write
	RecordSize int           // bytes per record (default 4096)
	// Interval paces the writes; 0 writes back to back.
	Interval time.Duration
	// RetryDelay is the wait after a failed write before the same record is tried again.
	RetryDelay time.Duration
	// StallThreshold: gaps between two acknowledgements longer than this
	// are listed in Report.Stalls (default 500 ms), e.g. one per failover.
	StallThreshold time.Duration
	Log            *slog.Logger
}

// Stall is one gap between two acknowledged records.
type Stall struct {
	From time.Time     `json:"from"`
	To   time.Time     `json:"to"`
	Took time.Duration `json:"took_ns"`
}

// maxStalls bounds Report.Stalls; a run that stalls more is broken anyway.
const maxStalls = 1000

// Report is what a run saw. A clean run has zero IOErrors, Lost and Corrupt.
type Report struct {
	File         string        `json:"file"`
	Start        time.Time     `json:"start"`
	End          time.Time     `json:"end"`
	Acked        int64         `json:"acked"` // records written and fsynced
	IOErrors     int           `json:"io_errors"`
	FirstError   string        `json:"first_error,omitempty"`
	Lost         int64         `json:"lost"`    // acknowledged but missing on read-back
	Corrupt      int64         `json:"corrupt"` // acknowledged but wrong on read-back
	LongestStall time.Duration `json:"longest_stall_ns"`
	StallFrom    time.Time     `json:"stall_from"`
	StallTo      time.Time     `json:"stall_to"`
	// Stalls are the gaps above Options.StallThreshold, in order.
	Stalls []Stall `json:"stalls,omitempty"`
}

// Clean reports whether the run saw no error of any kind.
func (r *Report) Clean() bool { return r.IOErrors == 0 && r.Lost == 0 && r.Corrupt == 0 }

func (r *Report) String() string {
	return fmt.Sprintf("%d records acknowledged, %d I/O errors, %d lost, %d corrupt, longest stall %v (%s → %s)",
		r.Acked, r.IOErrors, r.Lost, r.Corrupt, r.LongestStall.Round(time.Millisecond),
		r.StallFrom.Format("15:04:05.000"), r.StallTo.Format("15:04:05.000"))
}

// Run writes records for o.Duration (or until ctx ends), then verifies them.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.RecordSize == 0 {
		o.RecordSize = 4096
	}
	if o.StallThreshold == 0 {
		o.StallThreshold = 500 * time.Millisecond
	}
	if o.RecordSize < MinRecordSize {
		return nil, fmt.Errorf("workload: record size %d is below %d", o.RecordSize, MinRecordSize)
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = 100 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	start := time.Now()
	r := &Report{Start: start, File: filepath.Join(o.Dir, fmt.Sprintf("workload-%d.dat", start.UnixNano()))}
	f, err := os.OpenFile(r.File, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	defer f.Close()

	seed := uint64(start.UnixNano())
	buf := make([]byte, o.RecordSize)
	last := start
	deadline := start.Add(o.Duration)
	for seq := int64(0); time.Now().Before(deadline) && ctx.Err() == nil; {
		encode(buf, seed, seq, time.Now())
		_, werr := f.WriteAt(buf, seq*int64(o.RecordSize))
		if werr == nil {
			werr = f.Sync()
		}
		if werr != nil {
			r.IOErrors++
			if r.FirstError == "" {
				r.FirstError = fmt.Sprintf("%s: record %d: %v", time.Now().Format(time.RFC3339Nano), seq, werr)
			}
			o.Log.Warn("workload: write failed", "record", seq, "err", werr)
			time.Sleep(o.RetryDelay)
			continue // the same record again, as an application would retry
		}
		now := time.Now()
		gap := now.Sub(last)
		if gap > r.LongestStall {
			r.LongestStall, r.StallFrom, r.StallTo = gap, last, now
		}
		if gap > o.StallThreshold && len(r.Stalls) < maxStalls {
			r.Stalls = append(r.Stalls, Stall{From: last, To: now, Took: gap})
		}
		last = now
		seq++
		r.Acked = seq
		if o.Interval > 0 {
			time.Sleep(o.Interval)
		}
	}
	r.End = time.Now()
	if err := dropCache(f); err != nil {
		return r, err
	}
	lost, corrupt, err := Verify(f, seed, r.Acked, o.RecordSize)
	if err != nil {
		return r, err
	}
	r.Lost, r.Corrupt = lost, corrupt
	return r, nil
}

// encode fills buf with record seq: header (magic, seq, time, crc) and a
// payload derived from seed and seq, so that read-back can check it all.
func encode(buf []byte, seed uint64, seq int64, t time.Time) {
	rng := rand.New(rand.NewPCG(seed, uint64(seq)))
	for i := headerSize; i < len(buf); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(buf); j++ {
			buf[i+j] = byte(v >> (8 * j))
		}
	}
	binary.LittleEndian.PutUint32(buf[0:], magic)
	binary.LittleEndian.PutUint64(buf[4:], uint64(seq))
	binary.LittleEndian.PutUint64(buf[12:], uint64(t.UnixNano()))
	binary.LittleEndian.PutUint32(buf[20:], 0)
	binary.LittleEndian.PutUint32(buf[20:], crc32.Checksum(buf, castagnoli))
}

// check reports whether buf holds record seq intact.
func check(buf []byte, seed uint64, seq int64) bool {
	if binary.LittleEndian.Uint32(buf[0:]) != magic || int64(binary.LittleEndian.Uint64(buf[4:])) != seq {
		return false
	}
	want := binary.LittleEndian.Uint32(buf[20:])
	binary.LittleEndian.PutUint32(buf[20:], 0)
	if crc32.Checksum(buf, castagnoli) != want {
		return false
	}
	exp := make([]byte, len(buf))
	encode(exp, seed, seq, time.Unix(0, int64(binary.LittleEndian.Uint64(buf[12:]))))
	binary.LittleEndian.PutUint32(buf[20:], want)
	return string(exp[headerSize:]) == string(buf[headerSize:])
}

// Verify reads back the first acked records: a short file means lost
// records, a bad checksum, sequence or payload a corrupt one.
func Verify(f io.ReaderAt, seed uint64, acked int64, size int) (lost, corrupt int64, err error) {
	buf := make([]byte, size)
	for seq := int64(0); seq < acked; seq++ {
		n, rerr := f.ReadAt(buf, seq*int64(size))
		switch {
		case n < size && (rerr == nil || errors.Is(rerr, io.EOF)):
			lost++
		case rerr != nil && !errors.Is(rerr, io.EOF):
			return lost, corrupt, fmt.Errorf("workload: reading record %d back: %w", seq, rerr)
		case !check(buf, seed, seq):
			corrupt++
		}
	}
	return lost, corrupt, nil
}

// VerifyFile checks the first acked records of a file an earlier Run
// wrote; the seed is the start time its name carries.
func VerifyFile(path string, acked int64, size int) (lost, corrupt int64, err error) {
	var start int64
	if _, err := fmt.Sscanf(filepath.Base(path), "workload-%d.dat", &start); err != nil {
		return 0, 0, fmt.Errorf("workload: %s is not a workload file name: %w", path, err)
	}
	if size == 0 {
		size = 4096
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("workload: %w", err)
	}
	defer f.Close()
	if err := dropCache(f); err != nil {
		return 0, 0, err
	}
	return Verify(f, uint64(start), acked, size)
}

// dropCache makes the read-back come from the server, not from the pages
// this client wrote the records from: on a failover that lost data, the
// cache would still hold the records and hide the loss.
func dropCache(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("workload: sync before verifying: %w", err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("workload: dropping the cached pages before verifying: %w", err)
	}
	return nil
}
