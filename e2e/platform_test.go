package e2e

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader/bluebillywig/bluebillywigtest"
	"github.com/watchfolder/watchfolder/uploader/jwplayer/jwplayertest"
	"github.com/watchfolder/watchfolder/uploader/skylark/skylarktest"
)

// Issue 4, fan-out: one folder delivers to plain S3, Wistia and JW Player.
// JW answers 401 for a while: the file goes to failed/ with a reason naming
// jw, while archive and wistia are done with their object and id. Once JW
// accepts again, `watchfolder retry` re-runs only jw.
func TestFanOutOneDestinationFailsPermanently(t *testing.T) {
	cases := []struct {
		name  string
		order []string // folder destinations, in order
	}{
		{"failing-last", []string{"archive", "wistia", "jw"}},
		{"failing-first", []string{"jw", "archive", "wistia"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			px := testenv.NewProxy(t, minio.Endpoint)
			archive := uniqueBucket("fan-ar")
			minio.MakeBucket(t, archive)
			jw, jwp := jwPlatform(t, "fan-jw", px, "")
			_, wp := wistiaPlatform(t, "fan-wi", px)
			jw.Deny(true)
			tables := map[string]dest{
				"archive": {"archive", "type = \"s3\"\n" + s3Table(archive, px.URL)},
				"jw":      jwp.dest,
				"wistia":  wp.dest,
			}
			var dests []dest
			for _, n := range c.order {
				dests = append(dests, tables[n])
			}
			s := newSite(t, dests...)
			data := media("clip.mp4", 150<<10)
			s.start()
			s.drop("clip.mp4", data)
			j := s.waitState("clip.mp4", 30*time.Second, "failed", "done")
			if j.State != "failed" {
				t.Fatalf("job %s, want failed while jw answers 401", j.State)
			}
			if !strings.Contains(j.Error, "destination jw") || !strings.Contains(j.Error, "401") {
				t.Errorf("job error %q does not name destination jw and the 401", j.Error)
			}
			reason, err := os.ReadFile(filepath.Join(s.inbox, "failed", "clip.mp4.error.txt"))
			if err != nil || !strings.Contains(string(reason), "destination jw") {
				t.Errorf("failed/clip.mp4.error.txt: %v\n%s", err, reason)
			}
			if _, err := os.Stat(filepath.Join(s.inbox, "failed", "clip.mp4")); err != nil {
				t.Errorf("file not in failed/: %v", err)
			}
			wantObj := "s3://" + archive + "/news/clip.mp4"
			check := func(j jobJSON, jwState string) {
				t.Helper()
				if d := j.dest("archive"); d.State != "done" || d.Object != wantObj {
					t.Errorf("archive %+v, want done at %s", d, wantObj)
				}
				if d := j.dest("wistia"); d.State != "done" || len(wp.ids()) != 1 || d.VendorID != wp.ids()[0] {
					t.Errorf("wistia %+v, want done with the one media %v", d, wp.ids())
				}
				if d := j.dest("jw"); d.State != jwState {
					t.Errorf("jw %+v, want %s", d, jwState)
				}
				if n := px.Writes(archive + "/news/clip.mp4"); n != 1 {
					t.Errorf("archive object written %d times, want 1", n)
				}
				if n := wp.creates(); n != 1 {
					t.Errorf("wistia s3_copy created %d media, want 1", n)
				}
			}
			check(j, "failed")
			if d := j.dest("jw"); !strings.Contains(d.Error, "401") {
				t.Errorf("jw error %q does not carry the 401", d.Error)
			}
			if jwp.creates() != 0 {
				t.Errorf("jw created %d media while refusing credentials", jwp.creates())
			}

			jw.Deny(false)
			_, errOut, code := s.cli("retry", fmt.Sprint(j.ID))
			if code == 2 && strings.Contains(errOut, "unknown command") {
				t.Logf("watchfolder retry does not exist in this build: sub-states checked only")
				s.assertNoSecrets()
				return
			}
			if code != 0 {
				t.Fatalf("retry %d: exit %d: %s", j.ID, code, errOut)
			}
			j = s.waitState("clip.mp4", 30*time.Second, "done", "failed")
			if j.State != "done" {
				t.Fatalf("after retry: job %s: %s", j.State, j.Error)
			}
			check(j, "done")
			if ids := jwp.ids(); len(ids) != 1 || j.dest("jw").VendorID != ids[0] {
				t.Errorf("jw media %v, destination %+v", ids, j.dest("jw"))
			}
			r := s.receipt("clip.mp4")
			if r.vendorID("wistia") != wp.ids()[0] || r.vendorID("jw") != j.dest("jw").VendorID {
				t.Errorf("receipt %+v", r)
			}
			s.assertNoSecrets()
		})
	}
}

// Issue 4, sidecar: clip.json's title, description, tags and external_id
// reach JW (create metadata) and Blue Billywig (mediaclip PUT), and the
// sidecar moves into processed/ beside the media; a malformed sidecar sends
// the file and the sidecar to failed/ with the reason.
func TestSidecarReachesPlatformsAndMovesWithMedia(t *testing.T) {
	t.Parallel()
	px := testenv.NewProxy(t, minio.Endpoint)
	jw, jwp := jwPlatform(t, "side-jw", px, "")
	bb, bbp := bbPlatform(t, "side-bb", px)
	s := newSite(t, jwp.dest, bbp.dest)
	sidecar := `{"title": "Evening News", "description": "Top stories, 21 Nov", "tags": ["news", "evening"], "external_id": "ext-clip-0001"}`
	bad := `{"tittle": "typo"}`
	s.start()
	s.drop("clip.json", []byte(sidecar))
	s.drop("bad.json", []byte(bad))
	s.drop("clip.mp4", media("clip.mp4", 100<<10))
	s.drop("bad.mp4", media("bad.mp4", 100<<10))

	j := s.waitState("clip.mp4", 30*time.Second, "done", "failed")
	if j.State != "done" {
		t.Fatalf("clip.mp4 %s: %s", j.State, j.Error)
	}
	ms := jw.All()
	if len(ms) != 1 {
		t.Fatalf("jw holds %d media, want 1", len(ms))
	}
	meta := ms[0].Metadata
	if meta["title"] != "Evening News" || meta["description"] != "Top stories, 21 Nov" || meta["external_id"] != "ext-clip-0001" ||
		fmt.Sprint(meta["tags"]) != "[news evening]" {
		t.Errorf("jw metadata %v", meta)
	}
	clips := bb.Clips()
	if len(clips) != 1 || len(clips[0].Updates) != 1 {
		t.Fatalf("bb clips %+v, want one clip updated once", clips)
	}
	if u := clips[0].Updates[0]; u["title"] != "Evening News" || u["description"] != "Top stories, 21 Nov" || fmt.Sprint(u["tags"]) != "[news evening]" {
		t.Errorf("bb mediaclip update %v", u)
	}
	got, err := os.ReadFile(filepath.Join(s.inbox, "processed", "clip.json"))
	if err != nil || string(got) != sidecar {
		t.Errorf("processed/clip.json: %v %q", err, got)
	}
	if _, err := os.Stat(filepath.Join(s.inbox, "clip.json")); !os.IsNotExist(err) {
		t.Errorf("clip.json still in the folder: %v", err)
	}
	r := s.receipt("clip.mp4")
	if r.vendorID("jw") != ms[0].ID || r.vendorID("bb") != fmt.Sprint(clips[0].ID) {
		t.Errorf("receipt %+v", r)
	}

	b := s.waitState("bad.mp4", 30*time.Second, "failed", "done")
	if b.State != "failed" || !strings.Contains(b.Error, "bad.json") || !strings.Contains(b.Error, "tittle") {
		t.Errorf("bad.mp4: %s, error %q; want failed naming the sidecar and the unknown key", b.State, b.Error)
	}
	for _, n := range []string{"bad.mp4", "bad.json", "bad.mp4.error.txt"} {
		if _, err := os.Stat(filepath.Join(s.inbox, "failed", n)); err != nil {
			t.Errorf("failed/%s: %v", n, err)
		}
	}
	if reason, _ := os.ReadFile(filepath.Join(s.inbox, "failed", "bad.mp4.error.txt")); !bytes.Contains(reason, []byte("tittle")) {
		t.Errorf("reason file does not give the reason:\n%s", reason)
	}
	if n := len(jw.All()); n != 1 {
		t.Errorf("jw holds %d media: the malformed sidecar's file was delivered", n)
	}
	// Written through the proxy: clip.mp4 once to bb's bucket and once
	// through jw's upload link; nothing for bad.mp4.
	if w := px.AllWrites(); len(w) != 2 || slices.ContainsFunc(slices.Collect(maps.Values(w)), func(n int) bool { return n != 1 }) {
		t.Errorf("objects written: %v, want clip.mp4 once to each platform", w)
	}
	s.assertNoSecrets(bbp.secrets()...)
}

// Issue 4, rate limits and 5xx bursts: each platform call is answered with
// 429 (Retry-After: 1) or 5xx a few times, then served; the file is
// delivered once. The "after-work" variants answer 5xx although the
// platform did create the media (a lost answer): still one media.
func TestRateLimitsAnd5xxDeliverOnce(t *testing.T) {
	type setup func(t *testing.T, px *testenv.Proxy) *platform
	cases := []struct {
		name    string
		setup   setup
		minTime time.Duration // Retry-After honoured: not done sooner
	}{
		{"jw-create-429-retry-after", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := jwPlatform(t, "rl-jw1", px, "ready")
			f.ScriptOp("create", jwplayertest.Fault{Status: 429, RetryAfter: "1"}, jwplayertest.Fault{Status: 429, RetryAfter: "1"})
			return p
		}, 2 * time.Second},
		{"jw-create-5xx-after-work", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := jwPlatform(t, "rl-jw2", px, "")
			f.ScriptOp("create", jwplayertest.Fault{Status: 502, AfterWork: true})
			return p
		}, 0},
		{"wistia-s3_copy-503-burst", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := wistiaPlatform(t, "rl-wi1", px)
			f.CopyPlan("503", "503", "500")
			return p
		}, 0},
		{"wistia-s3_copy-429-then-lost-answer", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := wistiaPlatform(t, "rl-wi2", px)
			f.CopyPlan("429", "created-502")
			return p
		}, time.Second},
		{"bb-search-429-and-5xx", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := bbPlatform(t, "rl-bb1", px)
			f.ScriptOp("search", bluebillywigtest.Fault{Status: 429, RetryAfter: "1"}, bluebillywigtest.Fault{Status: 500}, bluebillywigtest.Fault{Status: 503})
			return p
		}, time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			px := testenv.NewProxy(t, minio.Endpoint)
			p := c.setup(t, px)
			s := newSite(t, p.dest)
			data := media("clip.mp4", 120<<10)
			s.start()
			start := time.Now()
			s.drop("clip.mp4", data)
			j := s.waitState("clip.mp4", 40*time.Second, "done", "failed")
			if j.State != "done" {
				t.Fatalf("job %s: %s\n%s", j.State, j.Error, s.tail())
			}
			if el := time.Since(start); el < c.minTime {
				t.Errorf("done after %s: Retry-After (%s in total) was not honoured", el, c.minTime)
			}
			ids := p.ids()
			if len(ids) != 1 || p.creates() != 1 {
				t.Fatalf("platform holds %v (%d created), want exactly one media", ids, p.creates())
			}
			if d := j.dest(p.dest.name); d.VendorID != ids[0] {
				t.Errorf("vendor_id %q, want %s", d.VendorID, ids[0])
			}
			bucket, key := onlyWrite(t, px)
			if got := minio.GetObject(t, bucket, key); !bytes.Equal(got, data) {
				t.Errorf("s3://%s/%s differs from the file", bucket, key)
			}
			s.assertNoSecrets(p.secrets()...)
		})
	}
}

// Issue 4, secrets: one debug-level run through all three platforms, then
// the log, list/show/status output and receipts hold no secret, no
// rpctoken and no S3 signature.
func TestSecretsNeverShown(t *testing.T) {
	t.Parallel()
	px := testenv.NewProxy(t, minio.Endpoint)
	_, jwp := jwPlatform(t, "sec-jw", px, "ready")
	_, wp := wistiaPlatform(t, "sec-wi", px)
	_, bbp := bbPlatform(t, "sec-bb", px)
	s := newSite(t, jwp.dest, wp.dest, bbp.dest)
	s.start()
	s.drop("clip.mp4", media("clip.mp4", 64<<10))
	if j := s.waitState("clip.mp4", 30*time.Second, "done", "failed"); j.State != "done" {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	s.stop()
	log, _ := os.ReadFile(s.log)
	if !bytes.Contains(log, []byte("level=DEBUG")) {
		t.Fatalf("no debug lines in the log: the check would prove little")
	}
	toks := bbp.secrets()
	if len(toks) == 0 {
		t.Fatalf("the BB fake saw no rpctoken")
	}
	s.assertNoSecrets(toks...) // stopped: list/show read state.db directly
}

// A JW direct upload link is a presigned S3 PUT URL: anyone holding it can
// overwrite the media's source until it expires. The jwplayer package keeps
// it out of errors, and v1 stores its link as "secret_upload_url", but v2
// saves it as Extra["upload_link"], which `show --json` prints.
func TestJWUploadLinkIsNotShown(t *testing.T) {
	t.Parallel()
	px := testenv.NewProxy(t, minio.Endpoint)
	jw, jwp := jwPlatform(t, "link-jw", px, "")
	s := newSite(t, jwp.dest)
	s.start()
	s.drop("clip.mp4", media("clip.mp4", 64<<10))
	if j := s.waitState("clip.mp4", 30*time.Second, "done", "failed"); j.State != "done" {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	sigs := jw.LinkSignatures()
	if len(sigs) == 0 || slices.Contains(sigs, "") {
		t.Fatalf("no upload link signatures recorded: %v", sigs)
	}
	s.assertNoSecrets(sigs...)
}

// Issue 10: a Skylark destination configured with nothing but its bucket
// writes the file at the bucket root, where Skylark ingests it (the test
// server ingests root-level objects only and moves them to processed/);
// the job is done with the processed object and the asset id.
func TestSkylarkDefaultKeyIsIngested(t *testing.T) {
	t.Parallel()
	bucket := uniqueBucket("sky")
	minio.MakeBucket(t, bucket)
	f := skylarktest.New(t, minio, bucket, 50*time.Millisecond)
	s := newSite(t, dest{"sky", fmt.Sprintf("type = \"skylark\"\n%sapi_url = %q\ntoken = %q\npoll_interval = \"100ms\"\nregister_timeout = \"30s\"\n",
		s3Table(bucket, minio.Endpoint), f.URL, f.Token)})
	s.start()
	s.drop("sub/promo clip.mp4", media("promo clip.mp4", 80<<10))
	j := s.waitState("sub/promo clip.mp4", 40*time.Second, "done", "failed")
	if j.State != "done" {
		t.Fatalf("job %s: %s\n%s", j.State, j.Error, s.tail())
	}
	if n := f.Ingested()["promo clip.mp4"]; n != 1 {
		t.Errorf("ingested %v, want the root-level object once", f.Ingested())
	}
	d := j.dest("sky")
	if d.Object != "s3://"+bucket+"/processed/promo clip.mp4" || d.VendorID == "" || d.VendorID != f.Assets()["promo clip"] {
		t.Errorf("destination %+v, assets %v", d, f.Assets())
	}
	s.assertNoSecrets(f.Token)
}
