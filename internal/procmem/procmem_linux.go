package procmem

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseExecutable drops the process's resident pages of the read-only,
// private mappings of its executable: text and read-only data, the pages
// the kernel can fetch again from the file unchanged. A mapping holding
// pages of its own (written after a copy on write, as a relocated
// read-only segment of a PIE build), in memory or swapped out, is left
// alone, and so is every writable one: a debugger's or a uprobe's
// breakpoint in the text is such a copied page, and keeps its mapping.
// One written in the instant between the check and the release would be
// lost. It returns how many bytes were resident in the mappings it
// released.
func ReleaseExecutable() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("procmem: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return 0, fmt.Errorf("procmem: %w", err)
	}
	return releaseFile(exe, &st)
}

// releaseFile drops the resident pages of the releasable mappings of the
// file at path, whose stat is st.
func releaseFile(path string, st *unix.Stat_t) (int64, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("procmem: %w", err)
	}
	maps, err := parseSmaps(bytes.NewReader(smaps))
	if err != nil {
		return 0, fmt.Errorf("procmem: /proc/self/smaps: %w", err)
	}
	var released int64
	for _, m := range releasable(maps, path, uint64(unix.Major(st.Dev)), uint64(unix.Minor(st.Dev)), st.Ino) {
		// The kernel drops the page table entries only: the file's
		// pages stay in the page cache, until it reclaims them.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("procmem: madvise %x-%x: %w", m.start, m.end, errno)
		}
		released += m.rss
	}
	return released, nil
}

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end   uintptr
	perms        string // "r-xp"
	major, minor uint64 // of the mapped file's device
	inode        uint64
	path         string
	rss          int64 // bytes resident
	anonymous    int64 // bytes resident and not backed by the file any more
	swap         int64 // bytes not backed by the file any more, swapped out
	counted      int   // how many of Anonymous and Swap the entry had
}

// releasable returns the mappings of the executable that
// ReleaseExecutable may drop: private, not writable, and with no page of
// their own, so that every page comes back from the file as it was. The
// executable is the file at path, or on device major:minor with inode
// (on overlayfs the device in smaps may not be the one stat reports).
func releasable(maps []mapping, path string, major, minor, inode uint64) []mapping {
	var out []mapping
	for _, m := range maps {
		if m.inode == 0 || m.path != path && (m.inode != inode || m.major != major || m.minor != minor) {
			continue
		}
		if len(m.perms) != 4 || m.perms[0] != 'r' || m.perms[1] != '-' || m.perms[3] != 'p' {
			continue
		}
		// Copied pages, in memory or swapped out, would be lost: the
		// file's content would come back in their place. A kernel that
		// does not say how many there are is not trusted to have none.
		if m.counted != 2 || m.anonymous != 0 || m.swap != 0 {
			continue
		}
		out = append(out, m)
	}
	return out
}

// parseSmaps reads the mappings of an smaps file: a header line per
// mapping ("start-end perms offset major:minor inode [path]"), then
// "Key: value kB" lines, of which it keeps Rss, Anonymous and Swap.
func parseSmaps(r io.Reader) ([]mapping, error) {
	var maps []mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key, rest, ok := strings.Cut(line, ":")
		if ok && !strings.Contains(key, " ") && !strings.Contains(key, "-") {
			if len(maps) == 0 {
				return nil, fmt.Errorf("field %q before any mapping", key)
			}
			m := &maps[len(maps)-1]
			switch key {
			case "Rss":
				n, err := kB(rest)
				if err != nil {
					return nil, fmt.Errorf("Rss of %x: %w", m.start, err)
				}
				m.rss = n
			case "Anonymous", "Swap":
				n, err := kB(rest)
				if err != nil {
					return nil, fmt.Errorf("%s of %x: %w", key, m.start, err)
				}
				if key == "Swap" {
					m.swap = n
				} else {
					m.anonymous = n
				}
				m.counted++
			}
			continue
		}
		m, err := parseHeader(line)
		if err != nil {
			return nil, err
		}
		maps = append(maps, m)
	}
	return maps, sc.Err()
}

// parseHeader parses "start-end perms offset major:minor inode [path]".
func parseHeader(line string) (mapping, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return mapping{}, fmt.Errorf("mapping line %q: want at least 5 fields", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || end < start {
		return mapping{}, fmt.Errorf("mapping line %q: bad address range", line)
	}
	maj, min, ok := strings.Cut(f[3], ":")
	major, err1 := strconv.ParseUint(maj, 16, 32)
	minor, err2 := strconv.ParseUint(min, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return mapping{}, fmt.Errorf("mapping line %q: bad device", line)
	}
	inode, err := strconv.ParseUint(f[4], 10, 64)
	if err != nil {
		return mapping{}, fmt.Errorf("mapping line %q: bad inode", line)
	}
	m := mapping{start: uintptr(start), end: uintptr(end), perms: f[1], major: major, minor: minor, inode: inode}
	// The path is the rest of the line, spaces and all.
	rest := line
	for range 5 {
		rest = strings.TrimLeft(rest, " ")
		_, rest, _ = strings.Cut(rest, " ")
	}
	m.path = strings.TrimLeft(rest, " ")
	return m, nil
}

// kB parses " 1234 kB" into bytes.
func kB(s string) (int64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), " ")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || unit != "kB" {
		return 0, fmt.Errorf("%q: want a size in kB", strings.TrimSpace(s))
	}
	return n << 10, nil
}
