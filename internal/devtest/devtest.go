// Package devtest runs `sluice dev` for tests outside cmd/sluice: the SDK's
// and the examples' end-to-end tests start a real server with it, built
// from this module's ./cmd/sluice.
package devtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a running `sluice dev` process.
type Server struct {
	// URL is the API's base URL.
	URL string
	// Key is the dev tenant's API key.
	Key string

	cmd    *exec.Cmd
	exited chan struct{}
}

var (
	buildOnce sync.Once
	binDir    string
	binary    string
	buildErr  error
)

// Main runs a package's tests and removes the binary Binary built:
//
//	func TestMain(m *testing.M) { devtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Binary builds ./cmd/sluice once per test process and returns its path.
// Packages that use it remove it after their tests with Main.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "sluice-devtest")
		if err != nil {
			buildErr = err
			return
		}
		binDir, binary = dir, filepath.Join(dir, "sluice")
		build := exec.Command("go", "build", "-o", binary, "./cmd/sluice")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build sluice: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// Start runs `sluice dev` on a free loopback port with a fresh data
// directory and waits for its ready line. The process is killed when the
// test ends; its log is printed if the test failed.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	args = append([]string{"dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0"}, args...)
	cmd := exec.Command(Binary(t), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "sluice.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Server{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(s.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-s.exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("sluice log tail:\n%s", b)
		}
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "api key: "):
				s.Key = strings.TrimPrefix(line, "api key: ")
			case strings.HasPrefix(line, "sluice ready "):
				s.URL = strings.TrimPrefix(line, "sluice ready ")
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("sluice dev: stdout closed before the ready line: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("sluice dev did not print its ready line within 90s")
	}
	return s
}
