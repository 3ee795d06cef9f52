package main

import (
	"context"
	"fmt"

	"tandem.dev/tandem/site"
)

func runValidate(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{fmt.Errorf("usage: tandem validate site.toml")}
	}
	if _, err := site.Load(args[0]); err != nil {
		return err
	}
	fmt.Printf("%s: ok\n", args[0])
	return nil
}
