package torture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/internal/testenv"
)

// outcome is what must become of a hostile input.
type outcome int

const (
	delivered outcome = iota // in every bucket, in processed/, one done job
	failedOut                // in failed/ with a reason, nothing uploaded
	ignored                  // no job, untouched in the inbox
	rejected                 // no job (the name cannot be one), in failed/ with a reason
)

// TestHostileInput feeds the real daemon odd and hostile files, each with
// the outcome it must have, then checks all of them (and that nothing else
// was uploaded or left behind).
func TestHostileInput(t *testing.T) {
	t.Parallel()
	sd := seed(t)
	r := rand.New(rand.NewPCG(sd, 21))
	counter := testenv.NewProxy(t, minio.Endpoint)
	x := newToxi(t, counter.Addr())
	bucket := newBucket(t, "a")
	s := newSite(t, siteConfig{maxAttempts: 3, dests: []destSpec{{name: "archive", bucket: bucket, endpoint: x.URL}}})
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.mp4"), []byte("outside the folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "tree.mp4"), []byte("outside, in a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newExpect()
	regular := func(rel string, size int) func() error {
		return func() error {
			data := content(r, size)
			s.drop(rel, data)
			e.delivered[rel] = sum(data)
			return nil
		}
	}
	deep := ""
	for i := range P.deepLevels {
		deep += fmt.Sprintf("level%02d/", i+1)
	}
	// The longest name whose receipt (<name>.receipt.json) still fits in
	// NAME_MAX; 255-byte names are TestNameTooLongForSidecarAndReceipt.
	long := strings.Repeat("x", 242-len(".mp4")) + ".mp4"
	cases := []struct {
		name   string
		rel    string
		make   func() error
		want   outcome
		reason string // failedOut: text the reason file must contain
	}{
		{"spaces", "name with  spaces .mp4", regular("name with  spaces .mp4", 1000), delivered, ""},
		{"quotes", `it's "quoted".mp4`, regular(`it's "quoted".mp4`, 1000), delivered, ""},
		{"leading dashes", "-rf --help.mp4", regular("-rf --help.mp4", 1000), delivered, ""},
		{"shell metacharacters", "$(reboot);`id`|&.mp4", regular("$(reboot);`id`|&.mp4", 1000), delivered, ""},
		{"242-byte name", long, regular(long, 1000), delivered, ""},
		{"unicode NFC", "caf\u00e9.mp4", regular("caf\u00e9.mp4", 1000), delivered, ""},
		{"unicode NFD (a different name)", "cafe\u0301.mp4", regular("cafe\u0301.mp4", 1001), delivered, ""},
		{"emoji and CJK", "\U0001F3AC 映画.mp4", regular("\U0001F3AC 映画.mp4", 1000), delivered, ""},
		{"newline in name", "new\nline.mp4", func() error { s.drop("new\nline.mp4", []byte("nl")); return nil }, failedOut, "control character"},
		{"tab in name", "tab\there.mp4", func() error { s.drop("tab\there.mp4", []byte("tab")); return nil }, failedOut, "control character"},
		// No job (the job store, keys and titles need UTF-8): the file goes
		// to failed/ with a reason, and the log says why.
		{"invalid UTF-8 name", "bad\xff.mp4", func() error { s.drop("bad\xff.mp4", []byte("latin1")); return nil }, rejected, "not valid UTF-8"},
		{"zero bytes", "empty.mp4", func() error { s.drop("empty.mp4", nil); return nil }, failedOut, "empty file"},
		{"FIFO", "pipe.mp4", func() error { return syscall.Mkfifo(filepath.Join(s.inbox, "pipe.mp4"), 0o644) }, ignored, ""},
		{"unix socket", "sock.mp4", func() error {
			l, err := net.Listen("unix", filepath.Join(s.inbox, "sock.mp4"))
			if err == nil {
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				t.Cleanup(func() { l.Close() })
			}
			return err
		}, ignored, ""},
		{"character device", "null.mp4", func() error {
			return syscall.Mknod(filepath.Join(s.inbox, "null.mp4"), syscall.S_IFCHR|0o644, 1<<8|3)
		}, ignored, ""},
		{"symlink to a file outside", "outside-link.mp4", func() error {
			return os.Symlink(filepath.Join(outside, "secret.mp4"), filepath.Join(s.inbox, "outside-link.mp4"))
		}, ignored, ""},
		{"symlink to a directory outside", "outside-dir", func() error {
			return os.Symlink(outside, filepath.Join(s.inbox, "outside-dir"))
		}, ignored, ""},
		{"dangling symlink", "dangling.mp4", func() error {
			return os.Symlink("/nonexistent/x.mp4", filepath.Join(s.inbox, "dangling.mp4"))
		}, ignored, ""},
		{"hard links (two names, one inode)", "hard-a.mp4", func() error {
			data := content(r, 4000)
			s.drop("hard-a.mp4", data)
			e.delivered["hard-a.mp4"], e.delivered["hard-b.mp4"] = sum(data), sum(data)
			return os.Link(filepath.Join(s.inbox, "hard-a.mp4"), filepath.Join(s.inbox, "hard-b.mp4"))
		}, delivered, ""},
		{"directory named like a media file", "folder.mp4/inner.mp4", regular("folder.mp4/inner.mp4", 2000), delivered, ""},
		{fmt.Sprintf("%d levels deep", P.deepLevels), deep + "deep.mp4", regular(deep+"deep.mp4", 3000), delivered, ""},
		{"sparse file over 5 TiB", "huge.mp4", func() error {
			f, err := os.Create(filepath.Join(s.inbox, "huge.mp4"))
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(5<<40 + 1)
		}, failedOut, "5 TiB"},
		{"malformed sidecar", "bad-meta.mp4", func() error {
			s.drop("bad-meta.json", []byte(`{"title": "unterminated`))
			e.sidecars["bad-meta.json"] = true
			s.drop("bad-meta.mp4", []byte("media with a broken sidecar"))
			return nil
		}, failedOut, "bad-meta.json"},
		{"huge sidecar (2 MiB)", "huge-meta.mp4", func() error {
			s.drop("huge-meta.json", []byte(`{"title":"`+strings.Repeat("a", 2*mib)+`"}`))
			e.sidecars["huge-meta.json"] = true
			s.drop("huge-meta.mp4", []byte("media with a huge sidecar"))
			return nil
		}, failedOut, "huge-meta.json"},
		{"hostile sidecar (path traversal in fields)", "evil-meta.mp4", func() error {
			s.drop("evil-meta.json", []byte(`{"title":"../../../etc/passwd","description":"\u0000\r\n","external_id":"../../x",
				"tags":["../..","/abs"],"custom_params":{"../k":"/v"},"skylark":{"uid":"../../.."}}`))
			e.sidecars["evil-meta.json"] = true
			data := []byte("media with a hostile sidecar")
			s.drop("evil-meta.mp4", data)
			e.delivered["evil-meta.mp4"] = sum(data)
			return nil
		}, delivered, ""},
	}
	for _, c := range cases {
		if err := c.make(); err != nil {
			t.Fatalf("%s: setup: %v", c.name, err)
		}
		switch c.want {
		case delivered:
			if _, ok := e.delivered[c.rel]; !ok {
				t.Fatalf("%s: setup did not record %q", c.name, c.rel)
			}
		case failedOut:
			e.failed[c.rel] = c.reason
		case ignored:
			e.keep(s, c.rel)
		case rejected:
			// Expected in failed/ without a job: verify must not count
			// them as strays; they are checked after it.
			e.sidecars[c.rel] = true
			e.sidecars[daemon.CompanionPath(c.rel, daemon.ReasonSuffix)] = true
		}
	}
	// Junk that lives outside stays as it was.
	outsideBefore, _ := sigOf(filepath.Join(outside, "secret.mp4"))

	// Files changed while they upload: the bandwidth squeeze keeps the
	// uploads slow enough to act mid-way.
	bw := x.add(t, `{"name":"bw","type":"bandwidth","stream":"upstream","attributes":{"rate":512}}`)
	mid := map[string][]byte{}
	for _, rel := range []string{"deleted-mid-upload.mov", "truncated-mid-upload.mov"} {
		mid[rel] = content(r, 8*mib+r.IntN(mib))
		s.drop(rel, mid[rel])
	}
	start := time.Now()
	s.start()
	changed := map[string]bool{}
	s.waitFor("every mid-upload file changed", 2*time.Minute, func() (bool, string) {
		jobs, err := s.list()
		if err != nil {
			return false, err.Error()
		}
		for _, j := range jobs {
			data, ok := mid[j.RelPath]
			if !ok || changed[j.RelPath] {
				continue
			}
			if j.State != "done" && (len(j.Destinations) != 1 || j.Destinations[0].BytesDone == 0) {
				continue
			}
			rel := j.RelPath
			changed[rel] = true
			p := filepath.Join(s.inbox, rel)
			var err error
			switch {
			case strings.HasPrefix(rel, "deleted"):
				err = os.Remove(p)
				e.either[rel] = sum(data) // gone, or (had it finished first) delivered whole
			case strings.HasPrefix(rel, "truncated"):
				err = os.Truncate(p, 3*mib)
				e.delivered[rel] = sum(data[:3*mib])
			default:
				repl := content(r, 2*mib)
				tmp := filepath.Join(s.stage, "replacement")
				if err = os.WriteFile(tmp, repl, 0o644); err == nil {
					err = os.Rename(tmp, p)
				}
				e.delivered[rel] = sum(repl)
			}
			if os.IsNotExist(err) {
				// Already delivered and filed: the original must be intact.
				t.Logf("%s: finished before it could be changed", rel)
				delete(e.either, rel)
				e.delivered[rel] = sum(data)
			} else if err != nil {
				t.Errorf("%s: %v", rel, err)
			} else {
				t.Logf("%s: changed at %d of %d bytes (%s)", rel, j.Destinations[0].BytesDone, j.Size, j.State)
			}
		}
		return len(changed) == len(mid), fmt.Sprintf("%d of %d changed", len(changed), len(mid))
	})
	x.remove(t, bw)
	s.waitIdle(3 * time.Minute)
	t.Logf("hostile input settled in %s", time.Since(start).Round(time.Millisecond))
	s.stop()
	fig := s.verify(e)
	if after, _ := sigOf(filepath.Join(outside, "secret.mp4")); after != outsideBefore {
		t.Errorf("the symlink target outside the folder changed")
	}
	if _, err := os.Stat(filepath.Join(outside, "tree.mp4")); err != nil {
		t.Errorf("a file in a symlinked directory outside the folder was moved: %v", err)
	}
	// The sparse file must fail fast (without reading 5 TiB).
	jobs, _ := s.list()
	for _, j := range jobs {
		if j.RelPath == "huge.mp4" && j.Attempts > 1 {
			t.Errorf("huge.mp4 was attempted %d times: a size over the limit is permanent", j.Attempts)
		}
	}
	for _, c := range cases {
		if c.want != rejected {
			continue
		}
		p := filepath.Join(s.inbox, "failed", filepath.FromSlash(c.rel))
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: not in failed/: %v", c.name, err)
		}
		if b, err := os.ReadFile(daemon.CompanionPath(p, daemon.ReasonSuffix)); err != nil || !strings.Contains(string(b), c.reason) {
			t.Errorf("%s: reason file %q, %v; want it to say %q", c.name, b, err, c.reason)
		}
	}
	if !strings.Contains(s.logTail(1<<20), "not valid UTF-8") {
		t.Errorf("the log does not say why bad\\xff.mp4 is left alone")
	}
	t.Logf("hostile input: %d cases + %d changed mid-upload; %s", len(cases), len(mid), fig)
}

// TestKeyTemplateEscapesAreConfigErrors: a key template that could leave
// its prefix is refused by `watchfolder check` (exit 2, naming the key).
func TestKeyTemplateEscapesAreConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ tmpl, want string }{
		{"../{relpath}", ".."},
		{"{folder}/../../{name}", ".."},
		{"/{relpath}", "absolute"},
		{"{folder}/./{name}", `"."`},
		{"{folder}/{nope}", "unknown placeholder"},
		{"{folder}/{relpath", "unclosed"},
		{"{folder}/{relpath}/", "ends in /"},
		{"{folder}/\x01{name}", "control"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.tmpl), func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.toml")
			os.WriteFile(cfg, []byte(fmt.Sprintf(`state_dir = %q
[[folder]]
name = "news"
path = %q
destinations = ["archive"]
[destination.archive]
type = "s3"
bucket = "bucket"
key = %q
`, dir, dir+"/in", c.tmpl)), 0o600)
			cmd := exec.Command(binPath, "check", "--config", cfg)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != 2 || !strings.Contains(string(out), "destination.archive.key") || !strings.Contains(string(out), c.want) {
				t.Errorf("check: exit %d, output %q; want exit 2 naming destination.archive.key and %q", code, out, c.want)
			}
		})
	}
}

// TestManyFilesOneDirectory drops thousands of small files into one
// directory at once: all delivered exactly once.
func TestManyFilesOneDirectory(t *testing.T) {
	t.Parallel()
	sd := seed(t)
	r := rand.New(rand.NewPCG(sd, 31))
	s := newSite(t, siteConfig{dests: []destSpec{{name: "archive", bucket: newBucket(t, "a")}}})
	e := newExpect()
	// Staged first, then renamed in as fast as possible: a burst.
	type staged struct{ tmp, rel string }
	var all []staged
	for i := range P.manyFiles {
		rel := fmt.Sprintf("burst/clip-%05d.mp4", i)
		data := content(r, 16+r.IntN(2048))
		tmp := filepath.Join(s.stage, fmt.Sprintf("m%05d", i))
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		e.delivered[rel] = sum(data)
		all = append(all, staged{tmp, rel})
	}
	os.MkdirAll(filepath.Join(s.inbox, "burst"), 0o755)
	s.start()
	start := time.Now()
	for _, f := range all {
		if err := os.Rename(f.tmp, filepath.Join(s.inbox, f.rel)); err != nil {
			t.Fatal(err)
		}
	}
	s.waitFor("burst filed", P.settle, func() (bool, string) {
		n := len(walkFiles(t, filepath.Join(s.inbox, "processed", "burst")))
		return n == 2*len(all), fmt.Sprintf("%d of %d files+receipts in processed", n, 2*len(all))
	})
	s.waitIdle(time.Minute)
	took := time.Since(start)
	s.stop()
	fig := s.verify(e)
	t.Logf("%d files in one directory: delivered in %s (%.0f files/s); %s", len(all), took.Round(time.Millisecond),
		float64(len(all))/took.Seconds(), fig)
}

// TestNameTooLongForSidecarAndReceipt: a 255-byte file name (NAME_MAX) is
// legal, but "<stem>.json" and "<name>.receipt.json" are not.
func TestNameTooLongForSidecarAndReceipt(t *testing.T) {
	t.Parallel()
	bucket := newBucket(t, "a")
	s := newSite(t, siteConfig{maxAttempts: 3, dests: []destSpec{{name: "archive", bucket: bucket}}})
	e := newExpect()
	for _, n := range []int{251, 255} {
		rel := strings.Repeat("y", n-len(".mp4")) + ".mp4"
		data := []byte(fmt.Sprintf("name of %d bytes", n))
		s.drop(rel, data)
		e.delivered[rel] = sum(data)
	}
	s.start()
	s.waitIdle(time.Minute)
	s.stop()
	s.verify(e)
}

// TestReplacedWhileUploading: a file replaced (rename over it, new inode)
// while its old version uploads must be delivered as the new version; the
// old version must never complete, and processed/ must hold the bytes that
// are in the bucket.
func TestReplacedWhileUploading(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(seed(t), 41))
	counter := testenv.NewProxy(t, minio.Endpoint)
	x := newToxi(t, counter.Addr())
	x.add(t, `{"name":"bw","type":"bandwidth","stream":"upstream","attributes":{"rate":512}}`)
	s := newSite(t, siteConfig{dests: []destSpec{{name: "archive", bucket: newBucket(t, "a"), endpoint: x.URL}}})
	old := content(r, 8*mib)
	s.drop("replaced.mov", old)
	s.start()
	s.waitJob("replaced.mov", time.Minute, func(j jobJSON) bool {
		return len(j.Destinations) == 1 && j.Destinations[0].BytesDone > 0
	})
	repl := content(r, 2*mib)
	s.drop("replaced.mov", repl)
	s.waitIdle(3 * time.Minute)
	s.stop()
	e := newExpect()
	e.delivered["replaced.mov"] = sum(repl)
	s.verify(e)
	if got, err := objectSum(context.Background(), s.cfg.dests[0].bucket, folder+"/replaced.mov"); err == nil && got == sum(old) {
		t.Errorf("the bucket holds the old version")
	}
}
