// Package version holds the version of this build of Trellis.
package version

// Version is the release version; -ldflags may override it at build time.
var Version = "0.1.0-dev"

// Human returns the version as the CLI prints it.
func Human() string { return "Trellis v" + Version }
