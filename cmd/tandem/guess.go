package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"

	"tandem.dev/tandem/wizard"
)

// guessReport is what tandem guess-codes found.
type guessReport struct {
	Tries    int    `json:"tries"`
	Accepted int    `json:"accepted"`
	Wrong    int    `json:"wrong"`  // refused as wrong, the code still live
	Burned   int    `json:"burned"` // refused, and the 5th: the code burned
	Other    int    `json:"other"`  // refused otherwise (busy, expired, ...)
	Failed   int    `json:"failed"` // no answer
	LastErr  string `json:"last_error,omitempty"`
}

// runGuessCodes plays an attacker on the management network against a
// head's setup code: random codes through the wizard's sign-in, counted
// by answer. A lab tool (the scenarios run it on the client VM); exit
// status 1 if any guess got in.
func runGuessCodes(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("guess-codes", flag.ContinueOnError)
	head := fs.String("head", "", "the wizard's address, host[:port] (required)")
	fp := fs.String("fingerprint", "", "its certificate's SHA-256 (required)")
	tries := fs.Int("tries", 1000, "how many codes to try")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *head == "" || *fp == "" || fs.NArg() > 0 || *tries < 1 {
		return usageError{errors.New("usage: tandem guess-codes --head HOST[:PORT] --fingerprint SHA256 [--tries 1000]")}
	}
	pin, err := wizard.ParseFingerprint(*fp)
	if err != nil {
		return usageError{fmt.Errorf("--fingerprint: %w", err)}
	}
	c, err := wizard.NewClient(*head, pin)
	if err != nil {
		return err
	}
	defer c.Close()
	var r guessReport
	for r.Tries < *tries && ctx.Err() == nil {
		n, _ := rand.Int(rand.Reader, big.NewInt(100_000_000))
		r.Tries++
		_, err := c.SignIn(ctx, fmt.Sprintf("%08d", n.Int64()))
		var ae *wizard.APIError
		switch {
		case err == nil:
			r.Accepted++
			_ = c.SignOut(ctx)
		case errors.As(err, &ae) && ae.Code == "wrong-code":
			r.Wrong++
		case errors.As(err, &ae) && ae.Code == "code-burned":
			r.Burned++
		case errors.As(err, &ae):
			r.Other++
			r.LastErr = err.Error()
		default:
			r.Failed++
			r.LastErr = err.Error()
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return err
	}
	if r.Accepted > 0 {
		return fmt.Errorf("%d of %d guessed codes got in", r.Accepted, r.Tries)
	}
	return ctx.Err()
}
