package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/state"
)

func runMain(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code := e.main(args)
	return out.String(), errb.String(), code
}

// Every command answers --help with exit 0 on stdout, spells flags
// --flag, and the completion table lists exactly the flags it really has.
func TestHelpAndCompletionMatchFlags(t *testing.T) {
	flagRE := regexp.MustCompile(`(?m)^\s+--([\w-]+)`)
	table := completionFlags()
	for name := range commands() {
		t.Run(name, func(t *testing.T) {
			args := []string{name, "--help"}
			if name == "db" {
				args = []string{"db", "check", "--help"}
			}
			out, errOut, code := runMain(args...)
			if code != exitOK || !strings.Contains(out, "usage: watchfolder "+name) || errOut != "" {
				t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
			}
			if regexp.MustCompile(`(?m)^\s+-\w`).MatchString(out) {
				t.Errorf("help spells a flag with one dash:\n%s", out)
			}
			var got []string
			for _, m := range flagRE.FindAllStringSubmatch(out, -1) {
				got = append(got, "--"+m[1])
			}
			want := append([]string(nil), table[name]...)
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("flags %v, completion table says %v", got, want)
			}
		})
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			out, _, code := runMain("completion", shell)
			if code != exitOK {
				t.Fatalf("exit %d", code)
			}
			for name := range commands() {
				if !strings.Contains(out, name) {
					t.Errorf("script lacks command %s", name)
				}
			}
			for _, w := range []string{"json", "failed", "interval", "config"} {
				if !strings.Contains(out, w) {
					t.Errorf("script lacks %q", w)
				}
			}
			for _, s := range state.AllStates() {
				if !strings.Contains(out, string(s)) {
					t.Errorf("script lacks state %s", s)
				}
			}
			if shell == "bash" {
				// The script must at least parse, and complete "--state u".
				script := filepath.Join(t.TempDir(), "c.bash")
				os.WriteFile(script, []byte(out), 0o644)
				probe := `source ` + script + `; COMP_WORDS=(watchfolder list --state up); COMP_CWORD=3; _watchfolder; echo "${COMPREPLY[@]}"`
				res, err := exec.Command("bash", "-c", probe).CombinedOutput()
				if err != nil || strings.TrimSpace(string(res)) != "uploading" {
					t.Errorf("bash completion of --state up: %v %q", err, res)
				}
			}
		})
	}
	if _, _, code := runMain("completion", "tcsh"); code != exitUsage {
		t.Errorf("unknown shell: exit %d", code)
	}
}

// The shipped unit passes systemd-analyze verify (ExecStart pointed at a
// real binary) and keeps its exposure level at 2.0 or below.
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install systemd (apt-get install -y systemd) to run this test")
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", "watchfolder.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/watchfolder ")) {
		t.Fatalf("unit's ExecStart is not /usr/bin/watchfolder (make install rewrites it)")
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecReload=", "LoadCredential="} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %s", want)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "watchfolder.service")
	os.WriteFile(p, bytes.Replace(unit, []byte("ExecStart=/usr/bin/watchfolder"), []byte("ExecStart="+binPath), 1), 0o644)
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", p).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for watchfolder.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level: %v\n%s", err, out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	if level > 2.0 {
		t.Errorf("exposure level %.1f, want <= 2.0", level)
	}
	t.Logf("exposure level %.1f", level)
}

func TestRenderStatus(t *testing.T) {
	st := &daemon.Status{Version: "v1", Uptime: "1h0m0s", Paused: []string{"news"},
		Counts: map[string]map[state.State]int{"news": {state.Done: 3, state.Queued: 1}, "empty": {}},
		InFlight: []daemon.InFlight{{ID: 7, Folder: "news", RelPath: "big.mp4", Destination: "archive", State: "uploading",
			Size: 100 << 20, BytesDone: 25 << 20, Rate: 5 << 20, ETASeconds: 15}},
		Failures: []daemon.JobView{{ID: 3, Folder: "news", RelPath: "bad.mp4", Error: "destination archive:\n NoSuchBucket"}}}
	var b bytes.Buffer
	renderStatus(&b, st)
	out := b.String()
	for _, want := range []string{"watchfolder v1, up 1h0m0s", "PAUSED: news", "news: queued 1 done 3", "empty: no jobs",
		"7 news/big.mp4 -> archive (uploading)", "[######..................]  25%", "25.0 MiB / 100.0 MiB", "5.0 MiB/s", "eta 15s",
		"3 news/bad.mp4: destination archive: NoSuchBucket"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
