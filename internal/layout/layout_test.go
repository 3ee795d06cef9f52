package layout

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestModule checks the rules against the real import graph.
func TestModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", Module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	if len(deps) < 40 {
		t.Fatalf("go list found only %d packages", len(deps))
	}
	if bad := Check(deps, Rules); len(bad) > 0 {
		slices.Sort(bad)
		t.Errorf("the layering is broken:\n%s", strings.Join(bad, "\n"))
	}
}

// TestCheck proves the checker catches what it must.
func TestCheck(t *testing.T) {
	m := func(p string) string { return Module + "/" + p }
	tests := []struct {
		name string
		deps map[string][]string
		want int
	}{
		{"services on init", map[string][]string{m("services/drbd"): {"fmt", m("init")}}, 1},
		{"ha on the lab, indirectly", map[string][]string{m("ha/supervisor"): {m("qemu/workload")}}, 1},
		{"PID 1 on the lab agent", map[string][]string{m("init"): {m("internal/labagent")}}, 1},
		{"site on a layer", map[string][]string{m("site"): {m("services/drbd")}}, 1},
		{"pairing on the site config", map[string][]string{m("pairing"): {m("site")}}, 1},
		{"the wizard on PID 1", map[string][]string{m("wizard"): {m("pairing"), m("init")}}, 1},
		{"the wizard on the lab", map[string][]string{m("wizard"): {m("qemu/workload")}}, 1},
		{"the wizard on pairing and the site config", map[string][]string{m("wizard"): {m("pairing"), m("site"), m("image/manifest"), m("internal/tomlpos")}}, 0},
		{"the inventory on PID 1", map[string][]string{m("inventory"): {m("wizard"), m("init")}}, 1},
		{"the inventory on the wizard's types and the disks", map[string][]string{m("inventory"): {m("wizard"), m("services/disks"), m("services/network")}}, 0},
		{"site on its helpers", map[string][]string{m("site"): {m("internal/tomlpos"), m("image/manifest"), "os"}}, 0},
		{"PID 1 on the HA supervisor", map[string][]string{m("init"): {m("ha/supervisor"), m("services/stack")}}, 0},
		{"a name that only starts alike", map[string][]string{m("services/x"): {m("initramfs")}}, 0},
	}
	for _, tc := range tests {
		if got := Check(tc.deps, Rules); len(got) != tc.want {
			t.Errorf("%s: %d findings %v, want %d", tc.name, len(got), got, tc.want)
		}
	}
}
