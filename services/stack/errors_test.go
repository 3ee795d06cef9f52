package stack

import (
	"errors"
	"testing"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/lvm"
	"tandem.dev/tandem/services/nfs"
	"tandem.dev/tandem/services/raid"
	"tandem.dev/tandem/services/vip"
	"tandem.dev/tandem/services/xfs"
)

// TestSentinelsMatchTheCommonOnes: a caller asks errors.Is(err,
// services.ErrInUse) of any layer; each layer's more specific sentinel
// must answer to the common failure it is a case of.
func TestSentinelsMatchTheCommonOnes(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		common error
	}{
		{"raid array active", raid.ErrActive, services.ErrInUse},
		{"raid no md", raid.ErrNoKernelMD, services.ErrNoKernel},
		{"lvm no dm", lvm.ErrNoKernelDM, services.ErrNoKernel},
		{"xfs no kernel fs", xfs.ErrNoKernelFS, services.ErrNoKernel},
		{"drbd no module", drbd.ErrNoModule, services.ErrNoKernel},
		{"drbd disk busy", drbd.ErrDiskBusy, services.ErrInUse},
		{"drbd address in use", drbd.ErrAddrInUse, services.ErrInUse},
		{"drbd held open", drbd.ErrHeldOpen, services.ErrInUse},
		{"drbd unknown resource", drbd.ErrUnknownResource, services.ErrNotFound},
		{"drbd no backing disk", drbd.ErrNoBackingDisk, services.ErrNotFound},
		{"drbd address missing", drbd.ErrAddrMissing, services.ErrNotFound},
		{"nfs no nfsd", nfs.ErrNoNFSD, services.ErrNoKernel},
		{"nfs port in use", nfs.ErrPortInUse, services.ErrInUse},
		{"vip no link", vip.ErrNoLink, services.ErrNotFound},
		{"disk not found", disks.ErrNotFound, services.ErrNotFound},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.common) {
			t.Errorf("%s: %v is not %v", tt.name, tt.err, tt.common)
		}
	}
}
