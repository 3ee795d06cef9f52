package services

import "errors"

// The failures every layer meets, whatever it wraps. A layer returns
// them inside its *Error, directly or behind a sentinel of its own that
// says more (Sentinel), so a caller asks errors.Is(err, ErrInUse) the
// same way of RAID, DRBD, LVM, XFS and NFS. A layer keeps a sentinel of
// its own only where it says something these do not (drbd's peer is not
// outdated, mdadm wants --force).
var (
	// ErrNotFound: the thing the layer acts on (a disk, an array, a
	// volume group, a link, a kernel resource) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInUse: someone else holds it (mounted, open, claimed by another
	// driver, a port bound), so the operation cannot go ahead now.
	ErrInUse = errors.New("in use")
	// ErrHasData: a device the layer was to initialise holds data (a
	// signature, a filesystem, a partition table); Tandem never
	// overwrites it.
	ErrHasData = errors.New("device holds data")
	// ErrNoKernel: the kernel lacks a driver the layer needs (md,
	// device-mapper, drbd, nfsd, xfs): the image or the board is wrong.
	ErrNoKernel = errors.New("kernel support missing")
	// ErrToolMissing: a program the layer runs is not installed.
	ErrToolMissing = errors.New("program not installed")
	// ErrToolFailed: a program the layer runs failed for a reason none
	// of the layer's stderr rules recognised; the message has its output.
	ErrToolFailed = errors.New("program failed")
)

// Sentinel returns a layer's own sentinel: its message is msg, and
// errors.Is also matches common, one of the errors above.
func Sentinel(msg string, common error) error { return &sentinel{msg, common} }

type sentinel struct {
	msg    string
	common error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.common }
