package pid1

import (
	"context"
	"log/slog"
)

// LabAgent starts the lab's guest agent on a virtio-serial port. PID 1
// does not import the lab: cmd/tandem hands it in (Options.LabAgent),
// and nil means the image has none.
type LabAgent func(ctx context.Context, channel string, log *slog.Logger)

// startLabAgent starts the agent on lab boards only: a real board has no
// lab channel in its manifest (board.Load refuses one there), and then
// nothing listens.
func (b *Boot) startLabAgent() error {
	if b.Manifest == nil || b.Manifest.LabChannel == "" || b.labAgent == nil {
		return nil
	}
	b.mu.Lock()
	b.lab = true
	b.mu.Unlock()
	// Early, so the lab can also diagnose a node in maintenance.
	b.labAgent(context.Background(), b.Manifest.LabChannel, b.Log)
	b.Log.Warn("LAB IMAGE: the lab's guest agent runs commands sent over " + b.Manifest.LabChannel + "; never flash this image onto hardware")
	return nil
}
