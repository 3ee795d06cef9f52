package pid1

import (
	"context"

	"tandem.dev/tandem/qemu/agent"
)

// startLabAgent starts the lab's guest agent (qemu/agent) on lab boards,
// so that the lab can run commands in the guest. A real board has no lab
// channel in its manifest, and then nothing listens.
func (b *Boot) startLabAgent() error {
	if b.Manifest == nil || b.Manifest.LabChannel == "" {
		return nil
	}
	// Early, so the lab can also diagnose a node in maintenance.
	agent.Start(context.Background(), b.Manifest.LabChannel, b.Log)
	return nil
}
