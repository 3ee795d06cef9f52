package site

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

var fuzzPositioned = regexp.MustCompile(`^f\.toml:[1-9][0-9]*:[1-9][0-9]*: `)

// FuzzParse: Parse must never panic (PID 1 runs it), and every error must
// locate itself by file:line:col, alone or inside ValidationErrors.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../configs/site.example.toml", "../configs/site.lab.toml"} {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(base))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.toml", data)
		if err == nil {
			if cfg == nil || len(cfg.Nodes) != 2 || cfg.Peer(cfg.Nodes[0].Name) == nil {
				t.Fatalf("accepted a config that is not a pair: %+v", cfg)
			}
			return
		}
		if cfg != nil {
			t.Fatalf("config returned with error %v", err)
		}
		// Parse recovers panics into an "internal error"; that is a bug.
		if strings.Contains(err.Error(), "internal error") {
			t.Fatalf("panic: %v", err)
		}
		var verrs ValidationErrors
		if errors.As(err, &verrs) {
			if len(verrs) == 0 {
				t.Fatal("empty ValidationErrors")
			}
			for _, e := range verrs {
				if !fuzzPositioned.MatchString(e.Error()) {
					t.Fatalf("unpositioned error in list: %q", e.Error())
				}
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || !fuzzPositioned.MatchString(err.Error()) {
			t.Fatalf("unpositioned error %T: %q", err, err.Error())
		}
	})
}
