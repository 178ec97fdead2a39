package procmem

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const smapsText = `00400000-0115e000 r-xp 00000000 fe:00 10133927                           /usr/bin/trellis
Size:              13688 kB
Rss:               11752 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
0115e000-0222d000 r--p 00d5e000 fe:00 10133927                           /usr/bin/trellis
Rss:               13816 kB
Anonymous:             0 kB
0222d000-022da000 rw-p 01e2d000 fe:00 10133927                           /usr/bin/trellis
Rss:                 692 kB
Anonymous:           120 kB
022da000-04325000 rw-p 00000000 00:00 0
Rss:                 132 kB
Anonymous:           132 kB
7f0000000000-7f0000001000 r--p 00000000 fe:00 10133927                           /usr/bin/trellis
Rss:                   4 kB
Anonymous:             4 kB
7f0000001000-7f0000002000 r--s 00000000 fe:00 10133927                           /usr/bin/trellis
Rss:                   4 kB
Anonymous:             0 kB
7f0000002000-7f0000003000 r-xp 00000000 fe:00 42                           /usr/lib/libc.so.6
Rss:                   4 kB
Anonymous:             0 kB
7f0000003000-7f0000004000 r-xp 00000000 00:2a 99                           /usr/bin/trellis
Rss:                   8 kB
Anonymous:             0 kB
7f0000004000-7f0000005000 r-xp 00000000 fe:00 10133927                           /tmp/a b  (deleted)
Rss:                   4 kB
Anonymous:             0 kB
`

func TestParseSmaps(t *testing.T) {
	maps, err := parseSmaps(strings.NewReader(smapsText))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 9 {
		t.Fatalf("%d mappings, want 9", len(maps))
	}
	got := maps[0]
	want := mapping{start: 0x400000, end: 0x115e000, perms: "r-xp", major: 0xfe, minor: 0, inode: 10133927,
		path: "/usr/bin/trellis", rss: 11752 << 10}
	if got != want {
		t.Errorf("first mapping: got %+v, want %+v", got, want)
	}
	if maps[2].anonymous != 120<<10 {
		t.Errorf("data mapping: Anonymous %d, want %d", maps[2].anonymous, 120<<10)
	}
	if maps[3].path != "" || maps[3].inode != 0 {
		t.Errorf("anonymous mapping: got path %q inode %d, want none", maps[3].path, maps[3].inode)
	}
	if p := maps[8].path; p != "/tmp/a b  (deleted)" {
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
	// with copied pages, the shared one, another file.
	want := []uintptr{0x400000, 0x115e000, 0x7f0000003000, 0x7f0000004000}
	if len(got) != len(want) {
		t.Fatalf("released %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("released %x, want %x", got, want)
		}
	}
}

// written is in the binary's writable data: released pages would come
// back from the file as the linker wrote them.
var written = [3 << 12]byte{1, 2, 3}

func TestReleaseExecutable(t *testing.T) {
	for i := range written {
		written[i] = byte(i%251) + 1
	}
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
	for i, b := range written {
		if b != byte(i%251)+1 {
			t.Fatalf("written data changed at %d: %d", i, b)
		}
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
