package vip

import (
	"net"
	"os"
	"strings"
)

// sysClassNet is where link attributes live; tests point it elsewhere.
var sysClassNet = "/sys/class/net"

func readSysBroadcast(name string) (net.HardwareAddr, error) {
	b, err := os.ReadFile(sysClassNet + "/" + name + "/broadcast")
	if err != nil {
		return nil, err
	}
	return net.ParseMAC(strings.TrimSpace(string(b)))
}
