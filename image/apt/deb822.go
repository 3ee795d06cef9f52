package apt

import (
	"fmt"
	"strings"
)

// stanza is one deb822 paragraph. Keys keep their spelling; lookups ignore
// case as apt does.
type stanza struct {
	keys []string
	vals []string
}

func (s *stanza) get(key string) string {
	for i, k := range s.keys {
		if strings.EqualFold(k, key) {
			return s.vals[i]
		}
	}
	return ""
}

// parseStanzas is the general deb822 reader for small files (sources,
// Release). Multi-line values keep their lines joined by "\n" with the
// leading space removed; " ." stands for an empty line.
func parseStanzas(text string, comments bool) ([]stanza, error) {
	var out []stanza
	var cur stanza
	flush := func() {
		if len(cur.keys) > 0 {
			out = append(out, cur)
		}
		cur = stanza{}
	}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case comments && strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if len(cur.keys) == 0 {
				return nil, fmt.Errorf("line %d: continuation line without a field", n+1)
			}
			v := strings.TrimSpace(line)
			if v == "." {
				v = ""
			}
			i := len(cur.vals) - 1
			if cur.vals[i] == "" {
				cur.vals[i] = v
			} else {
				cur.vals[i] += "\n" + v
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("line %d: want \"Field: value\", got %q", n+1, line)
			}
			cur.keys = append(cur.keys, strings.TrimSpace(k))
			cur.vals = append(cur.vals, strings.TrimSpace(v))
		}
	}
	flush()
	return out, nil
}
