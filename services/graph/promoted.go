package graph

import (
	"context"

	"tandem.dev/tandem/services"
)

// Primary turns a Promoter's primary role into a node of its own, so the
// graph can say it as data: "drbd" (Both) runs as secondary on both
// heads, and "drbd-primary" (ActiveOnly, depending on "drbd") promotes
// it on the active head. Stopping the ActiveOnly layers then demotes
// DRBD and leaves it connected as secondary, which is exactly standby.
func Primary(p services.Promoter) services.Resource { return primary{p} }

type primary struct{ p services.Promoter }

func (r primary) Name() string                      { return r.p.Name() + "-primary" }
func (r primary) Start(ctx context.Context) error   { return r.p.Promote(ctx) }
func (r primary) Stop(ctx context.Context) error    { return r.p.Demote(ctx) }
func (r primary) Monitor(ctx context.Context) error { return r.p.Monitor(ctx) }
