package build_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tandem.dev/tandem/image/build"
	"tandem.dev/tandem/image/spec"
	"tandem.dev/tandem/internal/testimage"
)

// Bad input gets one clear error and leaves nothing at the output path.
func TestBuildErrorsLeaveNoOutput(t *testing.T) {
	skipShort(t)
	tests := []struct {
		name  string
		spec  string
		board string
		want  []string
	}{
		{
			name: "unreachable mirror",
			spec: strings.Replace(smallSpec, "[debian]\n", "[debian]\nmirror = \"http://127.0.0.1:9/debian\"\n", 1),
			want: []string{"http://127.0.0.1:9/debian/dists/bookworm/InRelease"},
		},
		{
			name: "unknown package",
			spec: strings.Replace(smallSpec, `"mdadm",`, `"mdadm", "no-such-package-tandem",`, 1),
			want: []string{"small.toml", `"no-such-package-tandem" not found`},
		},
		{
			name:  "unknown board flag",
			spec:  smallSpec,
			board: "pdp11",
			want:  []string{`unknown board "pdp11"`, "qemu-x86_64"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sp, err := spec.Parse("small.toml", []byte(tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.img")
			_, err = build.Build(context.Background(), build.Options{
				Spec: sp, Board: tt.board, Output: out, LockPath: filepath.Join(dir, "x.lock"), InitBinary: testimage.Binary(t),
			})
			if err == nil {
				t.Fatal("build succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "out.img") {
					t.Errorf("left %s behind", e.Name())
				}
			}
		})
	}
}

// A dynamically linked init would not run in the initramfs: refuse it.
func TestBuildRefusesDynamicInit(t *testing.T) {
	sp, err := spec.Parse("small.toml", []byte(smallSpec))
	if err != nil {
		t.Fatal(err)
	}
	dyn := "/bin/sh" // any dynamically linked x86-64 program
	_, err = build.Build(context.Background(), build.Options{Spec: sp, Output: filepath.Join(t.TempDir(), "o.img"), InitBinary: dyn, CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("got %v, want a hint to build with CGO_ENABLED=0", err)
	}
}
