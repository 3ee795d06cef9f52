package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/configs"
	"tandem.dev/tandem/image/build"
	"tandem.dev/tandem/image/spec"
	"tandem.dev/tandem/site"
)

func runBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	specPath := fs.String("spec", "", "image spec (default: the built-in configs/image.toml)")
	boardName := fs.String("board", "", "board profile, overriding the spec's (qemu-x86_64, generic-x86_64)")
	output := fs.String("output", "out/tandem.img", "where to write the image")
	cache := fs.String("cache", "", "cache directory (default: ~/.cache/tandem)")
	lock := fs.String("lock", "", "lockfile (default: beside the spec; ./image.lock for the built-in spec)")
	update := fs.Bool("update-lock", false, "resolve packages against the mirror again and rewrite the lockfile")
	site := fs.String("site", "", "put this site.toml on the TANDEM-CFG partition")
	verbose := fs.Bool("v", false, "verbose log (file conflicts, every declarative step)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	var (
		sp  *spec.Spec
		err error
	)
	if *specPath == "" {
		sp, err = spec.Parse("embedded:"+configs.ImageSpecName, configs.ImageSpec)
	} else {
		sp, err = spec.Load(*specPath)
	}
	if err != nil {
		return err
	}
	var siteData []byte
	if *site != "" {
		if siteData, err = readSiteFor(*site, cmp.Or(*boardName, sp.Board)); err != nil {
			return err
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	res, err := build.Build(ctx, build.Options{
		Spec:       sp,
		Board:      *boardName,
		Output:     *output,
		CacheDir:   *cache,
		LockPath:   *lock,
		UpdateLock: *update,
		SiteConfig: siteData,
		Progress:   os.Stderr,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return err
	}
	fmt.Printf("image    %s\nversion  %s\nkernel   %s\nsize     %d bytes (root squashfs %d bytes, %d packages)\nsha256   %s\nbuilt in %.1fs\n",
		res.Path, res.Version, res.Kernel, res.Size, res.SquashfsSize, res.Packages, res.SHA256, res.Elapsed.Seconds())
	return nil
}

// readSiteFor reads and checks a site config an image will carry; on a
// board that is not a lab board it refuses lab-only settings.
func readSiteFor(path, boardName string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sc, err := site.Parse(path, data)
	if err != nil {
		return nil, err
	}
	bd, err := board.Load(boardName)
	if err != nil {
		return nil, err
	}
	if !bd.Lab() {
		key, _ := sc.PairKey() // a key_file is read on the heads
		if err := sc.CheckHardware(bd.Name, key); err != nil {
			return nil, err
		}
	}
	return data, nil
}

func runVersion(ctx context.Context, args []string) error {
	fmt.Println("tandem", build.Version)
	return nil
}
