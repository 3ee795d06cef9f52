// Package scenarios holds Tandem's end-to-end scenarios: each boots
// real heads (the image, Debian's kernel and tools) in the QEMU lab
// (package qemu) and checks one story an integrator cares about: a
// head boots, a pair forms, NFS clients ride through a failover, a
// fault changes nothing it should not. `go test -short` skips them;
// CI runs them.
package scenarios
