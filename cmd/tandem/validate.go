package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/services/stack"
	"tandem.dev/tandem/site"
)

// defaultBoard is the built-in image spec's board (configs/image.toml).
const defaultBoard = "qemu-x86_64"

func runValidate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	boardName := fs.String("board", defaultBoard, "hardware profile the heads run ("+strings.Join(board.Names(), ", ")+")")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("usage: tandem validate [--board NAME] site.toml")}
	}
	return validate(os.Stdout, fs.Arg(0), *boardName)
}

// validate checks a site config, then builds each head's real service
// graph from it (touching nothing) and prints the derived start order.
func validate(w io.Writer, path, boardName string) error {
	sc, err := site.Load(path)
	if err != nil {
		return err
	}
	bd, err := board.Load(boardName)
	if err != nil {
		return err
	}
	key, err := sc.PairKey()
	if !bd.Lab() {
		if err := sc.CheckHardware(bd.Name, key); err != nil {
			return err
		}
	}
	keyNote := ""
	if err != nil {
		// The key file lives on the heads; the graph needs only its length.
		key, keyNote = make([]byte, 32), fmt.Sprintf(" (pair key not read here: %v)", err)
	}
	fmt.Fprintf(w, "%s: ok: pair %s, heads %s, board %s%s\n", path, sc.Pair.Name, nodeNames(sc), bd.Name, keyNote)
	for _, n := range sc.Nodes {
		st, err := stack.Build(sc, n.Name, stack.Options{Board: bd, PairKey: key, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			return fmt.Errorf("%s: head %s: %w", path, n.Name, err)
		}
		active, standby := st.StartOrder()
		fmt.Fprintf(w, "%s start order, active:  %s\n", n.Name, strings.Join(active, " → "))
		fmt.Fprintf(w, "%s start order, standby: %s\n", n.Name, strings.Join(standby, " → "))
	}
	fmt.Fprintln(w, "stop order is the reverse; the VIP is always last up and first down")
	return nil
}

func nodeNames(sc *site.Config) string {
	var names []string
	for _, n := range sc.Nodes {
		names = append(names, n.Name)
	}
	return strings.Join(names, ", ")
}
