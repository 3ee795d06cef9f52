package heartbeat

import (
	"errors"
	"fmt"
	"net/netip"

	"tandem.dev/tandem/site"
)

// PathsFromSite returns node's heartbeat paths from a checked site config:
// the replication bond first, then the management network when both
// heads have a static management address (with DHCP the peer's address is
// not known, and only the replication path is returned). Both use
// ha.heartbeat_port.
func PathsFromSite(cfg *site.Config, node string) ([]Path, error) {
	me, peer := cfg.Node(node), cfg.Peer(node)
	if me == nil || peer == nil {
		return nil, fmt.Errorf("heartbeat: %q is not a node of pair %q", node, cfg.Pair.Name)
	}
	port := uint16(cfg.HA.HeartbeatPort)
	var paths []Path
	add := func(name string, local, remote netip.Prefix) {
		if local.IsValid() && remote.IsValid() {
			paths = append(paths, Path{Name: name,
				Local: netip.AddrPortFrom(local.Addr(), port), Peer: netip.AddrPortFrom(remote.Addr(), port)})
		}
	}
	add("replication", me.Replication.Prefix(), peer.Replication.Prefix())
	add("management", me.Management.Prefix(), peer.Management.Prefix())
	if len(paths) == 0 {
		return nil, errors.New("heartbeat: no path: neither the replication nor the management addresses are static on both heads")
	}
	return paths, nil
}
