// Package layout holds the rules for which of Tandem's packages may
// import which, and checks them against `go list -deps`: commands → PID 1
// → HA supervisor → services → site config and status types, and
// nothing in production imports the lab.
package layout

import (
	"fmt"
	"strings"
)

// Module is Tandem's module path.
const Module = "tandem.dev/tandem"

// Rule forbids packages under From (a path relative to the module, "" for
// all) from depending, directly or not, on packages under any of Not,
// unless the dependency is under one of Except.
type Rule struct {
	From, Why   string
	Not, Except []string
}

// Rules are the layering the README and DESIGN.md describe.
var Rules = []Rule{
	{From: "services", Not: []string{"init", "qemu", "ha", "cmd"}, Why: "services sit below the HA supervisor and PID 1"},
	{From: "ha", Not: []string{"init", "qemu", "cmd"}, Why: "the HA supervisor sits below PID 1"},
	{From: "image", Not: []string{"init", "qemu", "ha", "services", "cmd"}, Why: "the builder needs no head code"},
	{From: "site", Not: []string{""}, Except: []string{"site", "internal", "image/manifest"}, Why: "the site config imports no layer"},
	{From: "status", Not: []string{""}, Except: []string{"status", "internal"}, Why: "the status types import no layer"},
	{From: "pairing", Not: []string{""}, Except: []string{"pairing", "internal"}, Why: "the pairing protocol is a leaf: the wizard and PID 1 build on it"},
	{From: "wizard", Not: []string{""}, Except: []string{"wizard", "pairing", "site", "status", "image/manifest", "internal"}, Why: "the first-boot wizard builds on the pairing protocol and the site config only; PID 1 runs it"},
	{From: "inventory", Not: []string{"init", "qemu", "ha", "cmd"}, Why: "the hardware inventory sits below PID 1, which hands it to the wizard"},
	{From: "board", Not: []string{""}, Except: []string{"board", "internal"}, Why: "board profiles are data"},
	{From: "init", Not: []string{"qemu", "internal/labagent", "cmd"}, Why: "PID 1 does not import the lab (cmd hands it the agent)"},
	{From: "internal", Not: []string{"init", "qemu", "ha", "services", "cmd"}, Why: "internal helpers are leaves"},
}

// under reports whether pkg (a full import path) is rel or below it.
func under(pkg, rel string) bool {
	if rel == "" {
		return strings.HasPrefix(pkg, Module+"/") || pkg == Module
	}
	p := Module + "/" + rel
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// Check returns one line per broken rule: deps maps each package to its
// dependencies (go list's Deps).
func Check(deps map[string][]string, rules []Rule) []string {
	var out []string
	for pkg, ds := range deps {
		for _, r := range rules {
			if !under(pkg, r.From) {
				continue
			}
			for _, d := range ds {
				if bad(d, r) {
					out = append(out, fmt.Sprintf("%s depends on %s: %s", pkg, d, r.Why))
				}
			}
		}
	}
	return out
}

func bad(dep string, r Rule) bool {
	for _, e := range r.Except {
		if under(dep, e) {
			return false
		}
	}
	for _, n := range r.Not {
		if under(dep, n) {
			return true
		}
	}
	return false
}
