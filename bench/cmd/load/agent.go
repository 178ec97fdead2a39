package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// agentProc is a trellis agent child process.
type agentProc struct {
	cmd *exec.Cmd

	mu       sync.Mutex
	httpAddr string        // guarded by mu
	dnsAddr  string        // guarded by mu
	found    chan struct{} // closed once both addresses are parsed

	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // set before exited is closed
}

// startAgent starts bin as a dev agent on OS-chosen ports and waits, up to
// timeout, for it to print its HTTP and DNS addresses.
func startAgent(ctx context.Context, bin string, stderr io.Writer, timeout time.Duration) (*agentProc, error) {
	cmd := exec.Command(bin, "agent", "-dev", "-http-port", "0", "-dns-port", "0",
		"-server-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "-1", "-log-level", "warn")
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("agent: stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent: start %s: %w", bin, err)
	}
	p := &agentProc{cmd: cmd, found: make(chan struct{}), exited: make(chan struct{})}
	// The reader owns the pipe to its end (Wait must not run before the
	// reads finish), so it is also the goroutine that waits for the process.
	go func() {
		p.scan(out)
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.found:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("agent: exited before printing its addresses: %v", p.waitErr)
	case <-t.C:
		err = fmt.Errorf("agent: no HTTP and DNS addresses on stdout within %v", timeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.stop()
	return nil, err
}

// scan reads the agent's stdout, picking out the address lines and
// discarding the rest so the agent never blocks on a full pipe.
func (p *agentProc) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		// Only the first address of each is used: the dev agent binds one.
		val, _, _ = strings.Cut(strings.TrimSpace(val), ",")
		p.mu.Lock()
		switch strings.TrimSpace(key) {
		case "HTTP API":
			if p.httpAddr == "" {
				p.httpAddr = val
			}
		case "DNS":
			if p.dnsAddr == "" {
				p.dnsAddr = val
			}
		}
		done := p.httpAddr != "" && p.dnsAddr != ""
		p.mu.Unlock()
		if done {
			select {
			case <-p.found:
			default:
				close(p.found)
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (p *agentProc) addrs() (httpAddr, dnsAddr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.httpAddr, p.dnsAddr
}

func (p *agentProc) pid() int { return p.cmd.Process.Pid }

// stop interrupts the agent, as Ctrl-C would, and kills it if it has not
// exited within ten seconds.
func (p *agentProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.exited:
		return
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// memStatus is the resident memory of a process, in bytes.
type memStatus struct {
	rss, hwm int64
	// anon (heap, stacks) and file (mapped files, such as a bolt
	// database, and the binary) split rss; zero before Linux 4.5.
	anon, file int64
}

// readMem reads VmRSS, VmHWM (peak RSS), RssAnon and RssFile from
// /proc/pid/status.
func readMem(pid int) (memStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, fmt.Errorf("rss: %w", err)
	}
	var m memStatus
	for line := range bytes.Lines(b) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &m.rss
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &m.hwm
		case bytes.HasPrefix(line, []byte("RssAnon:")):
			dst = &m.anon
		case bytes.HasPrefix(line, []byte("RssFile:")):
			dst = &m.file
		default:
			continue
		}
		f := strings.Fields(string(line))
		if len(f) != 3 || f[2] != "kB" {
			return memStatus{}, fmt.Errorf("rss: unexpected line %q in /proc/%d/status", line, pid)
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("rss: %q: %w", line, err)
		}
		*dst = kb * 1024
	}
	if m.rss == 0 {
		return memStatus{}, errors.New("rss: no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, nil
}

// clockTick is USER_HZ, the unit of /proc/pid/stat's times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTimes is the user+system CPU time of the agent, of this process and
// of the whole machine (busy, that is not idle or waiting on I/O), so a
// phase can tell how much other work shared the CPUs with it.
type cpuTimes struct {
	agent, self, machine time.Duration
}

func (c cpuTimes) sub(d cpuTimes) cpuTimes {
	return cpuTimes{agent: c.agent - d.agent, self: c.self - d.self, machine: c.machine - d.machine}
}

// other is the CPU time spent by processes other than the agent and this
// one.
func (c cpuTimes) other() time.Duration { return max(0, c.machine-c.agent-c.self) }

// machineBusy reads the first line of /proc/stat: user nice system idle
// iowait irq softirq steal, in clock ticks.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("cpu: unexpected /proc/stat line %q", line)
	}
	var busy int64
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu: /proc/stat: %w", err)
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * clockTick, nil
}

func readCPU(pid int) (cpuTimes, error) {
	agent, err := procCPU(pid)
	if err != nil {
		return cpuTimes{}, err
	}
	self, err := selfCPU()
	if err != nil {
		return cpuTimes{}, err
	}
	busy, err := machineBusy()
	if err != nil {
		return cpuTimes{}, err
	}
	return cpuTimes{agent: agent, self: self, machine: busy}, nil
}

// procCPU is the user+system CPU time of process pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu: %w", err)
	}
	// Fields after the command name, which may hold spaces, in ")".
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	// utime and stime are fields 14 and 15 of stat; f starts at field 3.
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("cpu: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu: /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// selfCPU is the user+system CPU time of this process.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("cpu: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
