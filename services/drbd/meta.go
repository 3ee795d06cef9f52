package drbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services"
)

// mdState is what dump-md says about the backing device.
type mdState int

const (
	mdNone    mdState = iota // "No valid meta data found"
	mdClean                  // valid, activity log applied
	mdUnclean                // valid, activity log still to apply
)

// probeMetadata asks drbdmeta (through drbdadm dump-md) whether the
// backing device carries DRBD metadata. Only the exact "No valid meta
// data found" answer means none: any other failure is an error, never a
// licence to create-md over something we do not understand.
func (r *Resource) probeMetadata(ctx context.Context, op string) (mdState, error) {
	res, err := r.adm(ctx, op, "dump-md", r.cfg.Resource)
	switch {
	case err == nil:
		return mdClean, nil
	case errors.Is(err, ErrNoMetadata):
		return mdNone, nil
	case errors.Is(err, ErrUncleanMetadata):
		return mdUnclean, nil
	case strings.Contains(res.Stderr, "is configured"):
		return mdClean, nil // attached: the kernel holds valid metadata
	}
	return mdNone, err
}

// ensureMetadata creates metadata on a device that has none and applies a
// pending activity log; existing metadata is never recreated.
func (r *Resource) ensureMetadata(ctx context.Context, op string) error {
	md, err := r.probeMetadata(ctx, op)
	if err != nil {
		return err
	}
	switch md {
	case mdClean:
		return nil
	case mdUnclean:
		// A crash while Primary leaves the AL unapplied; attach would
		// refuse, and apply-al is what drbdadm attach expects done.
		r.log.Info("applying the activity log left by an unclean shutdown")
		_, err := r.adm(ctx, op, "apply-al", r.cfg.Resource)
		return err
	}
	self, _ := r.cfg.self()
	if what, err := r.holdsData(self.Disk); err != nil {
		return errorf(op, services.Missing, "read %s: %v", self.Disk, err)
	} else if what != "" {
		return errorf(op, services.Refused, "%w, but %s holds %s: refusing to create DRBD metadata over it", ErrNoMetadata, self.Disk, what)
	}
	r.log.Warn("no DRBD metadata on the backing device: creating it (first activation)", "disk", self.Disk)
	// --force skips create-md's interactive questions; holdsData and the
	// dump-md answer above are the safety checks instead.
	if _, err := r.adm(ctx, op, "--", "--force", "create-md", r.cfg.Resource); err != nil {
		return err
	}
	if err := atomicfile.Write(r.freshFile(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return errorf(op, services.Failed, "record first activation: %v", err)
	}
	return nil
}

// holdsData names a filesystem, volume or array signature at the start
// of dev (where the DRBD device's data begins with internal metadata),
// or "" if it finds none.
func (r *Resource) holdsData(dev string) (string, error) {
	b, err := r.readAt(dev, 0, 8192)
	if err != nil {
		return "", err
	}
	return signatureAt(b), nil
}

func signatureAt(b []byte) string {
	at := func(off int, magic []byte) bool {
		return len(b) >= off+len(magic) && bytes.Equal(b[off:off+len(magic)], magic)
	}
	le32 := binary.LittleEndian.AppendUint32(nil, 0xa92b4efc)
	switch {
	case at(0, []byte("XFSB")):
		return "an XFS filesystem"
	case at(1080, []byte{0x53, 0xef}):
		return "an ext2/3/4 filesystem"
	case at(0, le32) || at(4096, le32):
		return "an md RAID superblock"
	}
	for off := 0; off <= 1536; off += 512 {
		if at(off, []byte("LABELONE")) {
			return "an LVM physical volume"
		}
	}
	return ""
}

func readDevice(dev string, off int64, n int) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := f.ReadAt(b, off)
	if m > 0 {
		err = nil // a short device still has a readable start
	}
	return b[:m], err
}

// freshFile marks "this head created the metadata and has not yet seen
// its disk UpToDate": only then may the initial sync be skipped.
func (r *Resource) freshFile() string {
	return filepath.Join(r.cfg.StateDir, r.cfg.Resource+".fresh")
}

func (r *Resource) fresh() bool {
	_, err := os.Stat(r.freshFile())
	return err == nil
}

func (r *Resource) clearFresh() {
	if err := os.Remove(r.freshFile()); err == nil {
		r.log.Info("drbd initialised: disk UpToDate")
	}
}

// settleFreshPair gives a brand-new pair a short while to connect and
// skip its initial sync within Start; what it does not finish, Monitor
// finishes later.
// settleFor is how long Start waits for a brand-new pair to connect and
// skip its initial sync. Short: the head is not ready while it waits (a
// lone head would wait all of it), and the monitor finishes the job;
// the active role waits for UpToDate/UpToDate anyway.
const settleFor = 5 * time.Second

func (r *Resource) settleFreshPair(ctx context.Context) {
	limit := r.settleFor
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)-2*time.Second)
	}
	ctx, cancel := context.WithTimeout(ctx, max(limit, 0))
	defer cancel()
	for {
		st := r.State()
		if st.Disk == UpToDate {
			r.clearFresh()
			return
		}
		r.maybeSkipInitialSync(ctx, st)
		select {
		case <-ctx.Done():
			r.log.Info("new pair not initialised yet; the monitor will finish it", "state", st)
			return
		case <-time.After(r.pollEvery):
		}
	}
}

// skipReady says whether st allows skipping the initial sync.
func skipReady(st State) bool {
	return st.Configured && st.Connection == Connected && st.Replication == "Established" &&
		st.Disk == Inconsistent && st.PeerDisk == Inconsistent &&
		st.Role == Secondary && st.PeerRole == Secondary
}

// maybeSkipInitialSync makes a brand-new pair UpToDate/UpToDate without
// copying the whole device.
//
// Method: on one head only (Nodes[0]), while both heads are Connected,
// `drbdsetup new-current-uuid --clear-bitmap <minor>` (drbdadm's
// `-- --clear-bitmap new-current-uuid`). The kernel then generates a new
// current UUID, clears the bitmap, sends the UUIDs to the peer flagged
// "skip initial sync", and both disks become UpToDate with nothing to
// resync.
//
// Precondition, all checked here: this head created the metadata itself
// (the .fresh marker) and has never been UpToDate since; its current UUID
// is still DRBD's "just created" value (the kernel only skips the sync
// in that case; otherwise the command would merely rotate the UUID); the
// heads are Connected with no resync running; both disks are Inconsistent
// and both Secondary. Inconsistent/Inconsistent while Connected means
// neither head holds data written through DRBD, so declaring the
// (identical, never-written) contents in sync loses nothing. Nodes[1]
// never issues it, so the two heads cannot race each other.
func (r *Resource) maybeSkipInitialSync(ctx context.Context, st State) {
	if _, first := r.cfg.self(); !first || !skipReady(st) {
		return
	}
	const op = "start"
	res, err := r.setup(ctx, op, "get-gi", strconv.Itoa(r.cfg.Minor))
	if err != nil {
		r.log.Warn("cannot read generation UUIDs; not skipping the initial sync", "err", err)
		return
	}
	cur, ok := currentUUID(res.Stdout)
	if !ok || cur != justCreatedUUID {
		r.log.Warn("current UUID is not the just-created one; not skipping the initial sync", "gi", strings.TrimSpace(res.Stdout))
		return
	}
	r.log.Info("brand-new pair: skipping the initial sync (new-current-uuid --clear-bitmap)")
	if _, err := r.setup(ctx, op, "new-current-uuid", strconv.Itoa(r.cfg.Minor), "--clear-bitmap"); err != nil {
		r.log.Warn("skipping the initial sync failed; DRBD will need a full sync", "err", err)
	}
}

// currentUUID reads the first field of `drbdsetup get-gi`:
// "0000000000000004:0000000000000000:...:1:0:0:0:0:0:0:0".
func currentUUID(gi string) (uint64, bool) {
	first, _, ok := strings.Cut(strings.TrimSpace(gi), ":")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(first, 16, 64)
	return v, err == nil
}
