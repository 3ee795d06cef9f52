package qemu

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// shWords runs script in sh and returns the NUL-terminated words it
// printed.
func shWords(t *testing.T, script string) []string {
	t.Helper()
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return strings.Split(string(bytes.TrimSuffix(out, []byte{0})), "\x00")
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want string
	}{
		{"plain words stay bare", []string{"qemu-system-x86_64", "-m", "1024", "-netdev", "socket,udp=127.0.0.1:4001,localaddr=127.0.0.1:4000,id=mgmt"},
			"qemu-system-x86_64 -m 1024 -netdev socket,udp=127.0.0.1:4001,localaddr=127.0.0.1:4000,id=mgmt"},
		{"spaces", []string{"-append", "console=ttyS0 root=PARTLABEL=tandem-root-a"}, "-append 'console=ttyS0 root=PARTLABEL=tandem-root-a'"},
		{"empty word", []string{"-append", ""}, "-append ''"},
		{"single quote", []string{"it's"}, `'it'\''s'`},
		{"only quotes", []string{"''"}, `''\'''\'''`},
		{"metacharacters", []string{"$HOME", "a;b", "*", "~", "#x", "a|b", "`id`", `\`, `"`, "!", "a&b", "(x)", "{a,b}", "[ab]"},
			`'$HOME' 'a;b' '*' '~' '#x' 'a|b' '` + "`id`" + `' '\' '"' '!' 'a&b' '(x)' '{a,b}' '[ab]'`},
		{"newline and tab", []string{"a\nb", "a\tb"}, "'a\nb' 'a\tb'"},
		{"non-ASCII", []string{"tête"}, "'tête'"},
		{"assignment-like first word", []string{"A=b", "c=d"}, "'A=b' c=d"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ShellJoin(tc.argv)
			if got != tc.want {
				t.Errorf("ShellJoin(%q)\n got %s\nwant %s", tc.argv, got, tc.want)
			}
			// The shell reads back exactly the words (not as a command:
			// printf's own arguments, so the first word needs no binary).
			if words := shWords(t, `printf '%s\0' `+got); !slices.Equal(words, tc.argv) {
				t.Errorf("sh reads %s as %q, want %q", got, words, tc.argv)
			}
		})
	}
}

// A VM's rendered command line is the argv QEMU gets, word for word.
func TestCommandLineIsTheArgv(t *testing.T) {
	dir := t.TempDir()
	vm := &VM{Name: "head-a", Dir: dir, cfg: Config{
		Name: "head-a", Dir: dir, Kernel: "/tmp/lab dir/vmlinux", Initrd: "/tmp/initrd",
		Append: "console=ttyS0 tandem.slot=a quiet", MemoryMB: 1024, CPUs: 1, DataDisks: 2, DataDiskSize: 1 << 20,
		NICs:         []NIC{{ID: "mgmt", MAC: "52:54:00:1a:0a:00", Backend: "socket,udp=127.0.0.1:4001,localaddr=127.0.0.1:4000"}},
		AgentChannel: LabChannel,
	}}
	vm.QMPSocket, vm.ControlSocket, vm.AgentSocket = dir+"/head-a.qmp", dir+"/head-a-ctl.qmp", dir+"/head-a.agent"
	args, err := vm.args(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vm.argv = append([]string{qemuBinary}, args...)
	line := vm.CommandLine()
	if strings.Contains(line, "\n") {
		t.Errorf("command line spans several lines: %s", line)
	}
	if !strings.HasPrefix(line, qemuBinary+" -name head-a ") || !strings.Contains(line, " -append 'console=ttyS0 tandem.slot=a quiet' ") ||
		!strings.Contains(line, " -kernel '/tmp/lab dir/vmlinux' ") {
		t.Errorf("command line: %s", line)
	}
	if words := shWords(t, `printf '%s\0' `+line); !slices.Equal(words, vm.argv) {
		t.Errorf("sh reads the command line as\n%q\nwant\n%q", words, vm.argv)
	}
}

// A failed lab's report ends with every VM's command line, one line each.
func TestFailureReportEndsWithCommandLines(t *testing.T) {
	l := &Lab{Dir: "/tmp/tandem-lab-x", VMs: []*VM{
		{Name: "head-a", argv: []string{qemuBinary, "-name", "head-a", "-append", "console=ttyS0 quiet"}},
		{Name: "client", argv: []string{qemuBinary, "-name", "client"}},
	}}
	lines := strings.Split(strings.TrimSuffix(l.FailureReport(t.TempDir(), 4), "\n"), "\n")
	want := []string{
		"--- QEMU command lines (files in /tmp/tandem-lab-x):",
		"qemu-system-x86_64 -name head-a -append 'console=ttyS0 quiet'",
		"qemu-system-x86_64 -name client",
	}
	if len(lines) < len(want) || !slices.Equal(lines[len(lines)-len(want):], want) {
		t.Errorf("the report ends with\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
