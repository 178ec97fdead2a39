// Command dpbench is the Go half of bench/dataplane/run.sh, which drives
// the processes (fortio, haproxy, a dev agent, two sidecars); dpbench
// does what is awkward in bash:
//
//	dpbench ports N          print N free loopback TCP ports, one a line
//	dpbench report -dir DIR  turn the runs run.sh recorded in DIR (runs.tsv,
//	                         meta.txt and fortio's -json files) into the
//	                         markdown report of medians
//
// It reports figures and asserts nothing about them.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: dpbench ports N | dpbench report -dir DIR [-out FILE]")
		return 2
	}
	switch args[0] {
	case "ports":
		return runPorts(args[1:], stdout, stderr)
	case "report":
		return runReport(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "dpbench: unknown command %q (want ports or report)\n", args[0])
		return 2
	}
}

// runPorts holds all N listeners open while it picks them, so that the
// ports differ from each other; another process may still take one
// before run.sh binds it, which run.sh's readiness checks would show.
func runPorts(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: dpbench ports N")
		return 2
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		fmt.Fprintf(stderr, "dpbench ports: N %q is not a positive number\n", args[0])
		return 2
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintf(stderr, "dpbench ports: %v\n", err)
			return 1
		}
		ls = append(ls, l)
		fmt.Fprintln(stdout, l.Addr().(*net.TCPAddr).Port)
	}
	return 0
}

func runReport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dpbench report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the directory run.sh recorded the runs in (runs.tsv, meta.txt, fortio JSON)")
	out := fs.String("out", "", "also write the report to this file")
	clkTck := fs.Float64("clk-tck", 100, "clock ticks per second of /proc/<pid>/stat (getconf CLK_TCK)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 0 || *clkTck <= 0 {
		fmt.Fprintln(stderr, "usage: dpbench report -dir DIR [-out FILE] [-clk-tck N]")
		return 2
	}
	runs, err := loadRuns(*dir, *clkTck)
	if err != nil {
		fmt.Fprintf(stderr, "dpbench report: %v\n", err)
		return 1
	}
	meta, err := loadMeta(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "dpbench report: %v\n", err)
		return 1
	}
	text := render(meta, summarise(runs), runs)
	fmt.Fprint(stdout, text)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
			fmt.Fprintf(stderr, "dpbench report: %v\n", err)
			return 1
		}
	}
	return 0
}
