// Package procmem returns to the kernel the pages of the process's own
// executable that it mapped to start and no longer uses.
//
// Trellis is one binary: agent, CLI and sidecar proxy. Every package's
// initialisation runs in each of them and touches code and read-only
// data all over the binary, and the kernel maps file pages in 64 KiB
// blocks (or whole large folios) around each fault. A sidecar thus
// starts with most of the binary's text and read-only data in its
// resident set (about 27 MiB of 31), though its steady work uses a
// fraction of it. ReleaseExecutable unmaps those pages; the ones still
// used come back on their next access, from the page cache while the
// kernel keeps them there (the agent and other sidecars map the same
// file), else from the disk.
//
// What shrinks is the process's resident set and its share of the
// shared pages (PSS); the page cache is the kernel's to keep or reclaim,
// and stays charged to the memory cgroup that read it.
package procmem
