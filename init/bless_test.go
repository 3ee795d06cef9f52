package pid1

import "testing"

func TestBlessedName(t *testing.T) {
	tests := []struct {
		in, want string
		counted  bool
	}{
		{"tandem-a+3.conf", "tandem-a.conf", true},
		{"tandem-a+2-1.conf", "tandem-a.conf", true},
		{"tandem-b+0-3.conf", "tandem-b.conf", true},
		{"tandem-a.conf", "tandem-a.conf", false},
		{"tandem-a+x.conf", "tandem-a+x.conf", false},
	}
	for _, tt := range tests {
		got, counted := blessedName(tt.in)
		if got != tt.want || counted != tt.counted {
			t.Errorf("blessedName(%q) = %q, %v; want %q, %v", tt.in, got, counted, tt.want, tt.counted)
		}
	}
}
