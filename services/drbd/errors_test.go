package drbd

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"tandem.dev/tandem/services"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		stderr string
		exit   int
		want   error
		kind   services.Kind
	}{
		{"Could not connect to 'drbd' generic netlink family\n", 20, ErrNoModule, services.Missing},
		{"Failed to modprobe drbd (No such file or directory)\n", 20, ErrNoModule, services.Missing},
		{"No valid meta data found\nCommand 'drbdmeta 0 v08 /dev/md/tandem internal dump-md' terminated with exit code 255\n", 255, ErrNoMetadata, services.Failed},
		{"Found meta data is \"unclean\", please apply-al first\n", 255, ErrUncleanMetadata, services.Failed},
		{"0: Failure: (119) No valid meta-data signature found.\n", 10, ErrNoMetadata, services.Failed},
		{"0: Failure: (118) Unclean meta-data found.\nYou need to 'drbdadm apply-al res'\n", 10, ErrUncleanMetadata, services.Failed},
		{"0: Failure: (114) Lower device is already claimed. This usually means it is mounted.\n", 10, ErrDiskBusy, services.Failed},
		{"0: Failure: (106) Lower device already in use.\n", 10, ErrDiskBusy, services.Failed},
		{"0: Failure: (104) Can not open backing device.\n", 10, ErrNoBackingDisk, services.Missing},
		{"0: Failure: (109) Open of lower device failed.\n", 10, ErrNoBackingDisk, services.Missing},
		{"Can not open device '/dev/md/tandem': No such file or directory\n", 20, ErrNoBackingDisk, services.Missing},
		{"/dev/sda is not a block device!\n", 20, ErrNoBackingDisk, services.Missing},
		{"r0: Failure: (102) Local address(port) already in use.\n", 10, ErrAddrInUse, services.Failed},
		{"r0: Failure: (103) Remote address(port) already in use.\n", 10, ErrAddrInUse, services.Failed},
		{"r0: Failure: (120) The 'cram-hmac-alg' you specified is not known in the kernel. (Maybe you need to modprobe it, or modprobe hmac?)\n", 10, ErrCrypto, services.Config},
		{"0: Failure: (150) Can only attach to the data we lost last (see kernel log).\n", 10, ErrNotCurrentData, services.Refused},
		{"r0: Failure: (137) Kernel does not know how to handle your request.\nMaybe API_VERSION mismatch?\n", 10, ErrUnsupported, services.Failed},
		{"r0: Failure: (158) Unknown resource\n", 10, ErrUnknownResource, services.Failed},
		{"r0: No such resource\n", 10, ErrUnknownResource, services.Failed},
		{"0: Failure: (127) Device minor not allocated\n", 10, ErrUnknownResource, services.Failed},
		{"'r1' not defined in your config (for this host).\n", 3, ErrConfig, services.Config},
		{"'r0' ignored, since this host (head-c) is not mentioned with an 'on' keyword.\n", 3, ErrConfig, services.Config},
		{"WARN: no normal resources defined for this host (head-c)!?\n", 3, ErrConfig, services.Config},
		{"no resources defined!\n", 3, ErrConfig, services.Config},
		{"/run/tandem/drbd/r0.res:7: Parse error: 'TK_STRING' expected,\n", 10, ErrConfig, services.Config},
		{"/run/tandem/drbd/r0.res:12: in resource r0, on head-a { ... }: missing statement 'meta-disk'.\n", 10, ErrConfig, services.Config},
		{"/run/tandem/drbd/r0.res:12: in resource r0, on head-a: Missing statement 'address'\n", 10, ErrConfig, services.Config},
		{"r0: IP 10.10.0.11 not found on this host.\n", 10, ErrAddrMissing, services.Failed},
		{"0: State change failed: (-1) Multiple primaries not allowed by config\n", 11, ErrTwoPrimaries, services.Refused},
		{"0: State change failed: (-2) Need access to UpToDate data\nCommand 'drbdsetup-84 primary 0' terminated with exit code 17\n", 17, ErrNoUpToDateDisk, services.Refused},
		{"0: State change failed: (-7) Refusing to be Primary while peer is not outdated\n", 11, ErrPeerNotOutdated, services.Refused},
		{"0: State change failed: (-10) State change was refused by peer node\n", 11, ErrTwoPrimaries, services.Refused},
		{"0: State change failed: (-11) Device is diskless, the requested operation requires a disk\n", 11, ErrNoBackingDisk, services.Failed},
		{"0: State change failed: (-12) Device is held open by someone\nadditional info from kernel:\n0: failed to demote\n", 11, ErrHeldOpen, services.Failed},
		{"0: State change failed: (-17) Disk state is lower than outdated\n", 5, ErrNoUpToDateDisk, services.Refused},
		{"0: State change failed: (-18) In transient state, retry after next state change\n", 11, ErrTransient, services.Failed},
		{"0: State change failed: (-19) Concurrent state changes detected and aborted\n", 11, ErrTransient, services.Failed},
		{"something nobody has seen before\n", 20, services.ErrToolFailed, services.Failed},
		{"", 1, services.ErrToolFailed, services.Failed},
	}
	for _, tc := range cases {
		t.Run(tc.stderr, func(t *testing.T) {
			err := classify("start", result{Stderr: tc.stderr, Exit: tc.exit, Err: fmt.Errorf("exit status %d", tc.exit)}, "drbdadm x")
			var se *services.Error
			if !errors.As(err, &se) {
				t.Fatalf("not a services.Error: %v", err)
			}
			if !errors.Is(err, tc.want) || se.Kind != tc.kind || se.Resource != Name || se.Op != "start" {
				t.Errorf("got %v (kind %v), want %v (kind %v)", err, se.Kind, tc.want, tc.kind)
			}
		})
	}
	if classify("start", result{}, "x") != nil {
		t.Error("success classified as an error")
	}
	err := classify("start", result{Exit: -1, Err: fmt.Errorf("drbdadm up: %w", context.DeadlineExceeded)}, "drbdadm up")
	if services.KindOf(err) != services.Timeout {
		t.Errorf("deadline: kind %v", services.KindOf(err))
	}
}
