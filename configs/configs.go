// Package configs embeds the default image spec and the site examples, so
// that `tandem build` works with no arguments.
package configs

import _ "embed"

// ImageSpec is the default image spec (configs/image.toml).
//
//go:embed image.toml
var ImageSpec []byte

// ImageSpecName is how errors and logs name the embedded spec.
const ImageSpecName = "configs/image.toml"
