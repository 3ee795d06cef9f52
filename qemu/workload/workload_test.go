package workload

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestCleanRun(t *testing.T) {
	r, err := Run(context.Background(), Options{Dir: t.TempDir(), Duration: 300 * time.Millisecond, RecordSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Acked == 0 || r.LongestStall <= 0 {
		t.Errorf("report %v", r)
	}
}

// Verification must catch damage to acknowledged records.
func TestVerifyFindsDamage(t *testing.T) {
	const size = 256
	seed := uint64(42)
	buf := make([]byte, size)
	tests := []struct {
		name          string
		damage        func(f *os.File)
		lost, corrupt int64
	}{
		{"intact", func(*os.File) {}, 0, 0},
		{"flipped payload byte", func(f *os.File) { f.WriteAt([]byte{0xff}, 3*size+100) }, 0, 1},
		{"flipped sequence", func(f *os.File) { f.WriteAt([]byte{9}, 5*size+4) }, 0, 1},
		{"records swapped", func(f *os.File) {
			a, b := make([]byte, size), make([]byte, size)
			f.ReadAt(a, 1*size)
			f.ReadAt(b, 2*size)
			f.WriteAt(b, 1*size)
			f.WriteAt(a, 2*size)
		}, 0, 2},
		{"truncated", func(f *os.File) { f.Truncate(7 * size) }, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.CreateTemp(t.TempDir(), "w")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for seq := int64(0); seq < 10; seq++ {
				encode(buf, seed, seq, time.Unix(1700000000, seq))
				f.WriteAt(buf, seq*size)
			}
			tt.damage(f)
			lost, corrupt, err := Verify(f, seed, 10, size)
			if err != nil || lost != tt.lost || corrupt != tt.corrupt {
				t.Errorf("lost %d corrupt %d err %v; want %d, %d", lost, corrupt, err, tt.lost, tt.corrupt)
			}
		})
	}
}

func TestRecordSizeTooSmall(t *testing.T) {
	if _, err := Run(context.Background(), Options{Dir: t.TempDir(), Duration: time.Millisecond, RecordSize: 8}); err == nil {
		t.Error("want an error for an 8-byte record")
	}
}

// A paced run lists each pause above the threshold as a stall, and a
// later VerifyFile of its file finds every record.
func TestStallsAndVerifyFile(t *testing.T) {
	r, err := Run(context.Background(), Options{Dir: t.TempDir(), Duration: 500 * time.Millisecond, RecordSize: 512,
		Interval: 120 * time.Millisecond, StallThreshold: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Stalls) < int(r.Acked)-1 || len(r.Stalls) == 0 {
		t.Errorf("%d stalls for %d records paced 120 ms apart with a 100 ms threshold", len(r.Stalls), r.Acked)
	}
	for _, s := range r.Stalls {
		if s.Took < 100*time.Millisecond || !s.To.After(s.From) {
			t.Errorf("stall %+v is below the threshold or inverted", s)
		}
	}
	lost, corrupt, err := VerifyFile(r.File, r.Acked, 512)
	if err != nil || lost != 0 || corrupt != 0 {
		t.Errorf("VerifyFile: lost %d corrupt %d err %v", lost, corrupt, err)
	}
	if _, _, err := VerifyFile(r.File, r.Acked+5, 512); err != nil {
		t.Fatal(err)
	} else if lost, _, _ := VerifyFile(r.File, r.Acked+5, 512); lost != 5 {
		t.Errorf("VerifyFile past the end: lost %d, want 5", lost)
	}
}
