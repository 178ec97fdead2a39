package procmem

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const smapsText = `00400000-0115e000 r-xp 00000000 fe:00 10133927                           /usr/bin/trellis
Size:              13688 kB
Rss:               11752 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me sd
0115e000-0222d000 r--p 00d5e000 fe:00 10133927                           /usr/bin/trellis
Rss:               13816 kB
Anonymous:             0 kB
Swap:                  0 kB
0222d000-022da000 rw-p 01e2d000 fe:00 10133927                           /usr/bin/trellis
Rss:                 692 kB
Anonymous:           120 kB
022da000-04325000 rw-p 00000000 00:00 0
Rss:                 132 kB
Anonymous:           132 kB
7f0000000000-7f0000001000 r--p 00000000 fe:00 10133927                           /usr/bin/trellis
Rss:                   4 kB
Anonymous:             4 kB
Swap:                  0 kB
7f0000000800-7f0000000900 r--p 00000000 fe:00 10133927                           /usr/bin/trellis
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  4 kB
7f0000000900-7f0000000a00 r--p 00000000 fe:00 10133927                           /usr/bin/trellis
Rss:                   4 kB
7f0000001000-7f0000002000 r--s 00000000 fe:00 10133927                           /usr/bin/trellis
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000002000-7f0000003000 r-xp 00000000 fe:00 42                           /usr/lib/libc.so.6
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000003000-7f0000004000 r-xp 00000000 00:2a 99                           /usr/bin/trellis
Rss:                   8 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000004000-7f0000005000 r-xp 00000000 fe:00 10133927                           /tmp/a b  (deleted)
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
`

func TestParseSmaps(t *testing.T) {
	maps, err := parseSmaps(strings.NewReader(smapsText))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 11 {
		t.Fatalf("%d mappings, want 11", len(maps))
	}
	got := maps[0]
	want := mapping{start: 0x400000, end: 0x115e000, perms: "r-xp", major: 0xfe, minor: 0, inode: 10133927,
		path: "/usr/bin/trellis", rss: 11752 << 10, counted: 2}
	if got != want {
		t.Errorf("first mapping: got %+v, want %+v", got, want)
	}
	if maps[2].anonymous != 120<<10 {
		t.Errorf("data mapping: Anonymous %d, want %d", maps[2].anonymous, 120<<10)
	}
	if maps[3].path != "" || maps[3].inode != 0 {
		t.Errorf("anonymous mapping: got path %q inode %d, want none", maps[3].path, maps[3].inode)
	}
	if maps[5].swap != 4<<10 {
		t.Errorf("swapped-out mapping: Swap %d, want %d", maps[5].swap, 4<<10)
	}
	if p := maps[10].path; p != "/tmp/a b  (deleted)" {
		t.Errorf("path with spaces: got %q", p)
	}
}

func TestParseSmapsErrors(t *testing.T) {
	for _, in := range []string{
		"Rss: 4 kB\n",                               // a field before any mapping
		"00400000 r-xp 00000000 fe:00 1 /x\n",       // no range
		"00500000-00400000 r-xp 00000000 fe:00 1\n", // end before start
		"00400000-00500000 r-xp 00000000 fe 1\n",    // no minor
		"00400000-00500000 r-xp 00000000 fe:00 x\n",
		"00400000-00500000 r-xp 00000000 fe:00 1\nRss: 4 MB\n",
		"00400000-00500000 r-xp 00000000 fe:00 1\nAnonymous: lots kB\n",
		"00400000-00500000 r-xp 00000000 fe:00 1\nSwap: 1\n",
	} {
		if _, err := parseSmaps(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// Only private, read-only mappings of the executable with no page of
// their own are released: the others hold data the file does not.
func TestReleasable(t *testing.T) {
	maps, err := parseSmaps(strings.NewReader(smapsText))
	if err != nil {
		t.Fatal(err)
	}
	var got []uintptr
	for _, m := range releasable(maps, "/usr/bin/trellis", 0xfe, 0, 10133927) {
		got = append(got, m.start)
	}
	// Text and rodata; the mapping found by path on another device (as
	// on overlayfs); the deleted one found by device and inode. Not: the
	// written data segment, the anonymous mapping, the read-only one
	// with copied pages in memory, the one with copied pages swapped
	// out, the one whose counts of copied pages are missing, the shared
	// one, another file.
	want := []uintptr{0x400000, 0x115e000, 0x7f0000003000, 0x7f0000004000}
	if !slices.Equal(got, want) {
		t.Fatalf("released %x, want %x", got, want)
	}
}

// Against the kernel's own accounting: of two private read-only
// mappings of a file, the clean one is released and reads the file
// again; the one with a page written before it became read-only (a
// relocated segment's shape) keeps that page.
func TestReleaseFileKeepsCopiedPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "segment")
	content := bytes.Repeat([]byte("file"), 2<<12/4)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	clean, err := unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(clean)
	written, err := unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(written)
	copy(written, "copy")
	if err := unix.Mprotect(written, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	if clean[0] != 'f' {
		t.Fatalf("clean mapping reads %q", clean[:4])
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	n, err := releaseFile(path, &st)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Errorf("released %d bytes, want the clean mapping's", n)
	}
	if got := string(written[:4]); got != "copy" {
		t.Errorf("the written page reads %q after the release, want %q", got, "copy")
	}
	if !bytes.Equal(clean, content) {
		t.Error("the clean mapping does not read the file after the release")
	}
}

func TestReleaseExecutable(t *testing.T) {
	before := exeRss(t)
	n, err := ReleaseExecutable()
	if err != nil {
		t.Fatal(err)
	}
	after := exeRss(t)
	if n <= 0 {
		t.Fatalf("released %d bytes, want some", n)
	}
	// Pages used after the release come back, in 64 KiB blocks: the
	// runtime's, the test's. In this small binary that is about half of
	// what was resident; in the sidecar, a third.
	if after > before*3/4 {
		t.Errorf("the executable's read-only mappings hold %d KiB after the release, %d KiB before: want at most three quarters", after>>10, before>>10)
	}
}

// exeRss returns the resident bytes of the executable's private
// read-only mappings.
func exeRss(t *testing.T) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	maps, err := parseSmaps(f)
	if err != nil {
		t.Fatal(err)
	}
	var rss int64
	for _, m := range releasable(maps, exe, uint64(unix.Major(st.Dev)), uint64(unix.Minor(st.Dev)), st.Ino) {
		rss += m.rss
	}
	if rss == 0 {
		t.Fatal("no resident read-only mapping of the executable")
	}
	return rss
}
