// Package apt is the pure-Go APT client of `tandem build`: it finds the
// Debian mirror, verifies and reads its indexes, resolves the dependency
// closure of the image's packages, pins it in a lockfile and downloads the
// .deb files into a cache keyed by sha256. It runs no maintainer scripts
// and unpacks nothing; that is the builder's job.
//
// # Sources
//
//	HostSources(root string) ([]Source, error)      // <root>/etc/apt: sources.list, *.list, *.sources
//	SuiteSources(srcs []Source, suite string) ([]Source, error) // suite, suite-updates, suite-security
//	ParseMirror(uri, suite string, components []string) (Source, error) // explicit mirror from the spec
//
// No mirror host name is built in: the mirror is whatever the image spec or
// the host's apt configuration says.
//
// # Index
//
//	c := &apt.Client{CacheDir: dir}                 // HTTP, Keyring, Arch, Progress, Log, Backoff optional
//	idx, err := c.FetchIndex(ctx, srcs)             // InRelease + Packages of every source
//	idx.Lookup(name) / idx.Versions(name) / idx.Essential() / idx.Len()
//	ParsePackages(data, src) and NewIndex(arch, srcs, pkgs) build an index from text.
//
// FetchIndex downloads dists/<suite>/InRelease on every call and verifies
// its clearsigned signature with the source's Signed-By keyring, else
// Client.Keyring, else DefaultKeyring (binary or armored). A revoked key is
// rejected; key expiry is ignored so that snapshot mirrors work. A Release
// whose Valid-Until has passed is refused (an old signed index replayed by
// the mirror) unless the source says check-valid-until=no
// (Source.NoValidUntil). The Release must name the requested suite. For each component it
// fetches <comp>/binary-<arch>/Packages.xz (else .gz, else plain), by hash
// when the Release allows it, checks size and sha256 against the Release,
// and caches the uncompressed text in CacheDir/index/<sha256>, so a re-run
// with an unchanged InRelease downloads only InRelease. Across sources the
// highest version of a package is the default candidate; equal versions
// keep the earlier source.
//
// # Resolve
//
//	res, err := idx.Resolve(roots, apt.ResolveOptions{Exclude: excl})
//	res.Packages (sorted by name), res.Excluded (who wanted what), res.Why(name), res.TotalSize()
//
// Roots are "name", "name=version" or "name (op version)". The closure
// follows Depends and Pre-Depends (not Recommends, Suggests, Conflicts or
// Breaks). For "a | b" an alternative that is already selected wins, else
// the first satisfiable one. Virtual packages are met by Provides (a
// versioned dependency only by a versioned Provides); among several
// providers the best Priority, then the first name, wins. One version per
// name: the highest that meets the first constraint seen (roots first). The
// index holds one architecture plus "all", so ":any" and ":native" are met
// by any indexed package. A dependency on an excluded package (or on a
// virtual package all of whose providers are excluded) counts as met.
//
// # Lock and fetch
//
//	lock := res.Lock(roots, opts)                   // or build a Lock by hand
//	apt.WriteLock(path, lock); lock, err = apt.ReadLock(path)
//	lock.Covers(roots, opts)                        // false: resolve again
//	paths, err := c.Fetch(ctx, lock.Packages)       // name → CacheDir/debs/<sha256>.deb
//
// A lockfile names every package with version, arch, sha256, size, pool
// path and archive URI, so a build with a lockfile needs no index at all.
// Fetch verifies cached files and downloads the missing ones, four at a
// time, retrying transient failures twice with backoff; a file that fails
// its size or sha256 check is never left in the cache. Progress gets one
// Event per package ("fetch 37/152 packages, 41.2/118.0 MB").
package apt
