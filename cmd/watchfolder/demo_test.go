package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
)

// make demo must leave nothing running however it ends: Ctrl-C (INT to
// the whole foreground group), a closed terminal (HUP to the group: the
// daemon alone would take it as "reload") or a plain TERM to the script.
func TestDemoStopsEverythingOnSignals(t *testing.T) {
	repo, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		sig   syscall.Signal
		group bool
	}{
		{"terminal closed", syscall.SIGHUP, true},
		{"Ctrl-C", syscall.SIGINT, true},
		{"TERM to the script", syscall.SIGTERM, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr, err := testenv.FreeAddr()
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(addr)
			cmd := exec.Command("bash", filepath.Join(repo, "scripts", "demo.sh"))
			cmd.Env = append(os.Environ(), "DEMO_DIR="+dir, "DEMO_MINIO_PORT="+port, "WATCHFOLDER_BIN="+binPath)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			})
			sock := filepath.Join(dir, "control.sock")
			deadline := time.Now().Add(90 * time.Second)
			for !answers("unix", sock) {
				select {
				case <-exited:
					t.Fatalf("demo ended by itself:\n%s", out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("demo daemon did not come up:\n%s", out.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			target := cmd.Process.Pid
			if tc.group {
				target = -target
			}
			if err := syscall.Kill(target, tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("demo still running 60s after %v:\n%s", tc.sig, out.String())
			}
			if answers("unix", sock) || answers("tcp", addr) {
				t.Errorf("daemon or MinIO still answering after %v", tc.sig)
			}
			if left := processesMentioning(dir); len(left) > 0 {
				t.Errorf("still running after %v: %v", tc.sig, left)
			}
		})
	}
}

func answers(network, addr string) bool {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// processesMentioning lists the command lines that contain s.
func processesMentioning(s string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		line := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}
