package torture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/state"
)

// toxi is an in-process toxiproxy TCP proxy in front of addr.
type toxi struct {
	p   *toxiproxy.Proxy
	URL string
}

func newToxi(t *testing.T, upstream string) *toxi {
	t.Helper()
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	zerolog.SetGlobalLevel(zerolog.Disabled) // the toxics log every connection
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "s3", addr, upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &toxi{p: p, URL: "http://" + p.Listen}
}

// add installs a toxic given as toxiproxy's JSON.
func (x *toxi) add(t *testing.T, js string) string {
	t.Helper()
	w, err := x.p.Toxics.AddToxicJson(strings.NewReader(js))
	if err != nil {
		t.Fatalf("add toxic %s: %v", js, err)
	}
	return w.Name
}

func (x *toxi) remove(t *testing.T, name string) {
	t.Helper()
	if err := x.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// TestInjectedFaults delivers files through network faults between the
// daemon and MinIO (fan-out to two buckets): latency, a bandwidth squeeze,
// connections cut mid-part, a full outage and half-open connections. Every
// file must still be delivered exactly once.
func TestInjectedFaults(t *testing.T) {
	t.Parallel()
	sd := seed(t)
	r := rand.New(rand.NewPCG(sd, 11))
	counter := testenv.NewProxy(t, minio.Endpoint)
	x := newToxi(t, counter.Addr())
	s := newSite(t, siteConfig{maxAttempts: 200, maxBackoff: "2s", dests: []destSpec{
		{name: "archive", bucket: newBucket(t, "a"), endpoint: x.URL},
		{name: "mirror", bucket: newBucket(t, "m"), endpoint: x.URL},
	}})
	e := newExpect()
	s.start()
	n := 0
	// dropBatch drops files (the first over the multipart threshold) and
	// returns their relpaths.
	dropBatch := func(phase string, count int, large int) []string {
		var rels []string
		for i := range count {
			size := 1 + r.IntN(300<<10)
			if i == 0 {
				size = large
			}
			rel := fmt.Sprintf("%s/clip-%03d.mp4", phase, n)
			n++
			data := content(r, size)
			e.delivered[rel] = sum(data)
			s.drop(rel, data)
			rels = append(rels, rel)
		}
		return rels
	}
	waitFiled := func(rels []string, timeout time.Duration) {
		t.Helper()
		s.waitFor("files filed", timeout, func() (bool, string) {
			for _, rel := range rels {
				if _, err := os.Stat(filepath.Join(s.inbox, "processed", receiptOf(rel))); err != nil {
					return false, rel + " not filed"
				}
			}
			return true, ""
		})
	}
	// waitUploading waits until rel is uploading with some bytes sent.
	waitUploading := func(rel string) {
		t.Helper()
		s.waitJob(rel, time.Minute, func(j jobJSON) bool {
			for _, d := range j.Destinations {
				if d.BytesDone > 0 && d.BytesDone < j.Size {
					return true
				}
			}
			return j.State == "done"
		})
	}
	per := max(2, P.faultFiles/5)
	timing := map[string]time.Duration{}
	phase := func(name string, f func(t *testing.T)) {
		start := time.Now()
		t.Run(name, f)
		timing[name] = time.Since(start).Round(time.Millisecond)
	}

	phase("latency", func(t *testing.T) {
		a := x.add(t, `{"name":"lat-down","type":"latency","stream":"downstream","attributes":{"latency":150,"jitter":50}}`)
		b := x.add(t, `{"name":"lat-up","type":"latency","stream":"upstream","attributes":{"latency":50,"jitter":20}}`)
		waitFiled(dropBatch("latency", per, partSize+1+r.IntN(mib)), 2*time.Minute)
		x.remove(t, a)
		x.remove(t, b)
	})
	phase("bandwidth", func(t *testing.T) {
		a := x.add(t, `{"name":"bw","type":"bandwidth","stream":"upstream","attributes":{"rate":2048}}`)
		waitFiled(dropBatch("bandwidth", per, partSize+1+r.IntN(mib)), 3*time.Minute)
		x.remove(t, a)
	})
	phase("reset-mid-part", func(t *testing.T) {
		// Half the connections are cut after 1 MiB of request body (mid
		// part), a third are reset shortly after their first bytes.
		a := x.add(t, `{"name":"cut","type":"limit_data","stream":"upstream","toxicity":0.5,"attributes":{"bytes":1048576}}`)
		b := x.add(t, `{"name":"rst","type":"reset_peer","stream":"upstream","toxicity":0.3,"attributes":{"timeout":20}}`)
		waitFiled(dropBatch("reset", per, 2*partSize+1+r.IntN(mib)), 3*time.Minute)
		x.remove(t, a)
		x.remove(t, b)
	})
	phase("outage", func(t *testing.T) {
		rels := dropBatch("outage", per, 2*partSize+r.IntN(mib))
		waitUploading(rels[0])
		counter.SetDown(true)
		time.Sleep(P.outage) // the outage lasts this long, by design
		counter.SetDown(false)
		waitFiled(rels, 3*time.Minute)
	})
	phase("half-open", func(t *testing.T) {
		if !P.long {
			t.Skip("long suite only: a half-open connection is only noticed by the engine's 60 s stall timeout, which has no config key")
		}
		rels := dropBatch("halfopen", per, 3*partSize)
		waitUploading(rels[0])
		a := x.add(t, `{"name":"blackhole","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
		time.Sleep(5 * time.Second) // connections made now never answer
		x.remove(t, a)
		start := time.Now()
		waitFiled(rels, 3*time.Minute)
		t.Logf("half-open: delivered %s after the black hole ended", time.Since(start).Round(time.Second))
	})
	s.waitIdle(time.Minute)
	s.stop()
	fig := s.verify(e)
	resent := 0
	for _, c := range counter.AllWrites() {
		if c > 1 {
			resent++
		}
	}
	t.Logf("injected faults: %s; objects written more than once at the S3 level (retries of the same bytes) %d; phases %v",
		fig, resent, timing)
	if fig.duplicates != 0 || fig.lost != 0 {
		t.Errorf("duplicates %d, lost %d: both must be 0", fig.duplicates, fig.lost)
	}
}

// TestProcessedUnwritable makes processed/ refuse the move (a read-only bind
// mount, or a plain file in its place where mounts are not allowed): the job
// must wait in moving, never be uploaded again, and finish once fixed.
func TestProcessedUnwritable(t *testing.T) {
	t.Parallel()
	counter := testenv.NewProxy(t, minio.Endpoint)
	bucket := newBucket(t, "a")
	s := newSite(t, siteConfig{dests: []destSpec{{name: "archive", bucket: bucket, endpoint: counter.URL}}})
	processed := filepath.Join(s.inbox, "processed")
	if err := os.MkdirAll(processed, 0o755); err != nil {
		t.Fatal(err)
	}
	how := "read-only bind mount"
	fix := func() {}
	if out, err := exec.Command("mount", "--bind", "-o", "ro", processed, processed).CombinedOutput(); err == nil {
		unmounted := false
		fix = func() {
			if out, err := exec.Command("umount", processed).CombinedOutput(); err != nil {
				t.Fatalf("umount: %v %s", err, out)
			}
			unmounted = true
		}
		t.Cleanup(func() {
			if !unmounted {
				exec.Command("umount", processed).Run()
			}
		})
	} else {
		how = "a file named processed (mount failed: " + strings.TrimSpace(string(out)) + ")"
		os.Remove(processed)
		if err := os.WriteFile(processed, []byte("in the way"), 0o644); err != nil {
			t.Fatal(err)
		}
		fix = func() {
			if err := os.Remove(processed); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("processed/ made unwritable with %s", how)
	e := newExpect()
	r := rand.New(rand.NewPCG(5, 5))
	files := map[string]int{"small.mp4": 1000, "large.mov": partSize + 7}
	for rel, size := range files {
		data := content(r, size)
		e.delivered[rel] = sum(data)
		s.drop(rel, data)
	}
	s.start()
	for rel := range files {
		s.waitJob(rel, time.Minute, func(j jobJSON) bool {
			return j.State == "moving" && len(j.Destinations) == 1 && j.Destinations[0].State == "done"
		})
	}
	// A restart while it cannot move must not upload again either.
	s.stop()
	s.start()
	s.waitFor("a failed move after the restart", time.Minute, func() (bool, string) {
		b, _ := os.ReadFile(s.logPath)
		parts := strings.Split(string(b), "=== torture: start 2")
		return len(parts) == 2 && strings.Contains(parts[1], "cannot move file"), "no move attempt logged yet"
	})
	for rel := range files {
		if got := counter.Writes(bucket + "/" + folder + "/" + rel); got != 1 {
			t.Errorf("%s written %d times while processed/ was unwritable, want 1", rel, got)
		}
	}
	fix()
	if P.long {
		// The daemon retries moves on its own (every 30 s).
		s.waitIdle(2 * time.Minute)
	} else {
		// Fast subset: a restart resumes the moving jobs at once.
		s.stop()
		s.start()
		s.waitIdle(time.Minute)
	}
	s.stop()
	fig := s.verify(e)
	for rel := range files {
		if got := counter.Writes(bucket + "/" + folder + "/" + rel); got != 1 {
			t.Errorf("%s written %d times in all, want 1", rel, got)
		}
	}
	t.Logf("processed unwritable: %s; writes per object %v", fig, counter.AllWrites())
}

// TestCorruptStateRefusesToStart: a state.db that is garbage, or whose meta
// pages are damaged, makes `watchfolder run` exit non-zero at once with a
// clear message, and leaves the file as it was (for a post-mortem).
func TestCorruptStateRefusesToStart(t *testing.T) {
	t.Parallel()
	bucket := newBucket(t, "a")
	cases := []struct {
		name    string
		corrupt func(t *testing.T, path string)
	}{
		{"random garbage", func(t *testing.T, path string) {
			os.WriteFile(path, content(rand.New(rand.NewPCG(1, 2)), 64<<10), 0o600)
		}},
		{"text", func(t *testing.T, path string) {
			os.WriteFile(path, []byte("this is not a database\n"), 0o600)
		}},
		{"both meta pages zeroed", func(t *testing.T, path string) {
			// A real database first.
			st, err := state.Open(path, state.Options{})
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			page := os.Getpagesize()
			if _, err := f.WriteAt(make([]byte, 2*page), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"data pages overwritten, meta intact", func(t *testing.T, path string) {
			st, err := state.Open(path, state.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				j := &state.Job{Folder: folder, Path: fmt.Sprintf("/x/%d.mp4", i), RelPath: fmt.Sprintf("%d.mp4", i),
					State: state.Queued, Size: 10, Destinations: []state.Dest{{Name: "archive", Type: "s3", State: state.DestPending}}}
				if err := st.Create(context.Background(), j); err != nil {
					t.Fatal(err)
				}
			}
			st.Close()
			fi, _ := os.Stat(path)
			page := int64(os.Getpagesize())
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(content(rand.New(rand.NewPCG(3, 4)), int(fi.Size()-2*page)), 2*page); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated to 100 bytes", func(t *testing.T, path string) {
			st, err := state.Open(path, state.Options{})
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSite(t, siteConfig{dests: []destSpec{{name: "archive", bucket: bucket}}})
			db := filepath.Join(s.stateDir, "state.db")
			os.MkdirAll(s.stateDir, 0o700)
			c.corrupt(t, db)
			before, _, _ := fileSum(db)
			s.drop("clip.mp4", []byte("must not be uploaded"))
			cmd := exec.Command(binPath, "run")
			cmd.Env = s.env()
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("watchfolder run did not exit within 30 s on a corrupt database; output:\n%s", out)
			}
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			msg := string(out)
			if code == 0 || !strings.Contains(msg, "corrupt") || !strings.Contains(msg, db) || strings.Contains(msg, "panic") {
				t.Errorf("exit %d, output %q: want non-zero, a message naming the file as corrupt, no panic", code, msg)
			}
			if after, _, _ := fileSum(db); after != before {
				t.Errorf("the corrupt database was modified")
			}
			if _, err := os.Stat(filepath.Join(s.inbox, "clip.mp4")); err != nil {
				t.Errorf("the inbox file was touched: %v", err)
			}
			t.Logf("%s: exit %d: %s", c.name, code, strings.TrimSpace(msg))
		})
	}
	if keys := minio.ListKeys(t, bucket); len(keys) != 0 {
		t.Errorf("objects uploaded despite a corrupt database: %v", keys)
	}
}
