package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sluiceProc is a sluice serve process under test.
type sluiceProc struct {
	cmd    *exec.Cmd
	url    string
	secret string
	tenant string
}

func splitBrokers() []string { return strings.Split(*brokers, ",") }

// startSluice runs `sluice serve` with roles on a fresh topic prefix.
func startSluice(prefix, roles, key string, extra ...string) *sluiceProc {
	args := append([]string{"serve", "--roles", roles, "--kafka-brokers", *brokers, "--redis-url", *redisURL,
		"--topic-prefix", prefix, "--partitions", strconv.Itoa(*partitions), "--replication-factor", "1",
		"--create-topics", "--bootstrap-api-key", key, "--allow-loopback-targets",
		"--http-addr", "127.0.0.1:0", "--node-id", prefix + roles, "--log-level", "warn"}, extra...)
	cmd := exec.Command(*binary, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	check(err)
	check(cmd.Start())
	p := &sluiceProc{cmd: cmd}
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(90*time.Second, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "signing secret: "); ok {
			p.secret = s
		}
		if s, ok := strings.CutPrefix(line, "tenant: "); ok {
			p.tenant = s
		}
		if s, ok := strings.CutPrefix(line, "sluice ready "); ok {
			if strings.HasPrefix(s, "http") {
				p.url = s
			}
			go func() {
				for sc.Scan() {
				}
			}()
			return p
		}
	}
	check(fmt.Errorf("sluice exited before it was ready"))
	return nil
}

// stop sends SIGTERM and waits.
func (p *sluiceProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// rssMiB is the process's resident set size.
func (p *sluiceProc) rssMiB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
