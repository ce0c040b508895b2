package e2e

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/watchfolder/watchfolder/internal/testenv"
	"github.com/watchfolder/watchfolder/uploader/bluebillywig/bluebillywigtest"
	"github.com/watchfolder/watchfolder/uploader/jwplayer/jwplayertest"
	"github.com/watchfolder/watchfolder/uploader/wistia/wistiatest"
)

// platform is one fake platform wired for a test: its config table, the
// crash hook armed in it, and what it holds afterwards.
type platform struct {
	dest    dest
	hook    *hook
	ids     func() []string // media ids the platform holds
	creates func() int      // create/copy calls that made a media
	secrets func() []string // per-request credentials seen on the wire
}

// jwPlatform is the exported JW Player test server, its upload links
// pointing at px so the bytes are counted with the other objects.
func jwPlatform(t *testing.T, bucket string, px *testenv.Proxy, waitFor string) (*jwplayertest.Server, *platform) {
	bucket = uniqueBucket(bucket)
	minio.MakeBucket(t, bucket)
	f := jwplayertest.NewWith(t, minio, bucket, jwplayertest.Options{Secret: jwSecret, LinkBase: px.URL})
	return f, &platform{
		dest: dest{"jw", fmt.Sprintf("type = \"jwplayer\"\nsite_id = %q\napi_secret = \"${WF_E2E_JW}\"\napi_url = %q\nwait_for = %q\npoll_interval = \"100ms\"\nregister_timeout = \"30s\"\n",
			f.Site, f.URL, waitFor)},
		ids: func() []string {
			var ids []string
			for _, m := range f.All() {
				ids = append(ids, m.ID)
			}
			return ids
		},
		creates: func() int { return len(f.All()) },
		// The upload links' signatures are checked by TestJWUploadLinkIsNotShown.
		secrets: func() []string { return nil },
	}
}

// wistiaPlatform is the exported Wistia test server; the daemon uploads
// to its bucket through px.
func wistiaPlatform(t *testing.T, bucket string, px *testenv.Proxy) (*wistiatest.Server, *platform) {
	bucket = uniqueBucket(bucket)
	minio.MakeBucket(t, bucket)
	f := wistiatest.New(t, minio, bucket, wistiatest.Options{Token: wistiaToken})
	return f, &platform{
		dest: dest{"wistia", fmt.Sprintf("type = \"wistia\"\ntoken = \"${WF_E2E_WISTIA}\"\nupload_url = %q\napi_url = %q\n%s",
			f.URL, f.URL, s3Table(bucket, px.URL))},
		ids: func() []string {
			ms, _, _ := f.Snapshot()
			var ids []string
			for _, m := range ms {
				ids = append(ids, m.HashedID)
			}
			return ids
		},
		creates: func() int { ms, _, _ := f.Snapshot(); return len(ms) },
		secrets: func() []string { return nil },
	}
}

// bbPlatform is the exported Blue Billywig test server; the daemon
// uploads through its ACL-recording proxy, which forwards to px.
func bbPlatform(t *testing.T, bucket string, px *testenv.Proxy) (*bluebillywigtest.Server, *platform) {
	bucket = uniqueBucket(bucket)
	minio.MakeBucket(t, bucket)
	f := bluebillywigtest.New(t, minio, bucket, bluebillywigtest.Options{KeyID: bbKeyID, Secret: bbSecret, Upstream: px.URL})
	return f, &platform{
		dest: dest{"bb", fmt.Sprintf("type = \"bluebillywig\"\npublication = \"e2epub\"\naccount = %q\napi_key_id = %q\napi_secret = \"${WF_E2E_BB}\"\napi_url = %q\npoll_interval = \"100ms\"\nregister_timeout = \"30s\"\n%s",
			f.Account, bbKeyID, f.URL, s3Table(bucket, f.S3URL))},
		ids: func() []string {
			var ids []string
			for _, c := range f.Clips() {
				ids = append(ids, strconv.Itoa(c.ID))
			}
			return ids
		},
		creates: func() int { return len(f.Clips()) },
		secrets: f.Tokens,
	}
}

// onlyWrite returns the single object written through px, failing unless
// exactly one object was written exactly once.
func onlyWrite(t *testing.T, px *testenv.Proxy) (bucket, key string) {
	t.Helper()
	w := px.AllWrites()
	if len(w) != 1 {
		t.Fatalf("objects written through the S3 proxy: %v, want exactly one", w)
	}
	for k, n := range w {
		if n != 1 {
			t.Errorf("%s written %d times, want once", k, n)
		}
		bucket, key, _ = strings.Cut(k, "/")
	}
	return bucket, key
}

// Issue 4, crash 1: the daemon is SIGKILLed after the upload was committed,
// while the registration call (JW status poll with wait_for = "ready", Blue
// Billywig SAPI search) is in flight. After a restart the job finishes with
// one media on the platform and the object written once.
func TestCrashBetweenUploadAndRegistration(t *testing.T) {
	cases := []struct {
		name string
		make func(t *testing.T, px *testenv.Proxy) *platform
		// vendorBeforeRegister: the media id is known at upload time (JW).
		vendorBeforeRegister bool
	}{
		{"jwplayer-wait-ready", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := jwPlatform(t, "c1-jw", px, "ready")
			p.hook = newHook(true)
			f.OnStatusWithBytes(p.hook.fire)
			return p
		}, true},
		{"bluebillywig-search", func(t *testing.T, px *testenv.Proxy) *platform {
			f, p := bbPlatform(t, "c1-bb", px)
			p.hook = newHook(true)
			f.OnFound(p.hook.fire)
			return p
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			px := testenv.NewProxy(t, minio.Endpoint)
			p := c.make(t, px)
			s := newSite(t, p.dest)
			data := media("clip.mp4", 300<<10)
			s.start()
			s.drop("clip.mp4", data)
			recv(t, p.hook.hit, 30*time.Second, "registration call", s)
			s.kill()
			close(p.hook.release)

			j, _ := s.job("clip.mp4") // offline: read from state.db
			d := j.dest(p.dest.name)
			if j.State != "registering" || d.State != "registering" {
				t.Fatalf("after the kill: job %s, destination %s; want both registering", j.State, d.State)
			}
			if got := d.VendorID != ""; got != c.vendorBeforeRegister {
				t.Errorf("after the kill: vendor_id %q", d.VendorID)
			}

			s.start()
			j = s.waitState("clip.mp4", 30*time.Second, "done", "failed")
			if j.State != "done" {
				t.Fatalf("job ended %s: %s", j.State, j.Error)
			}
			ids := p.ids()
			if len(ids) != 1 || p.creates() != 1 {
				t.Fatalf("platform holds %v (%d created), want exactly one media", ids, p.creates())
			}
			if d := j.dest(p.dest.name); d.State != "done" || d.VendorID != ids[0] {
				t.Errorf("destination %+v, want done with vendor_id %s", d, ids[0])
			}
			if got := s.receipt("clip.mp4").vendorID(p.dest.name); got != ids[0] {
				t.Errorf("receipt vendor_id %q, want %s", got, ids[0])
			}
			bucket, key := onlyWrite(t, px)
			if got := minio.GetObject(t, bucket, key); !bytes.Equal(got, data) {
				t.Errorf("s3://%s/%s holds %d bytes, not the file's %d", bucket, key, len(got), len(data))
			}
			s.assertNoSecrets(p.secrets()...)
		})
	}
}

// Issue 4, crash 2: the platform answered the create/copy call with an id
// and the daemon is SIGKILLed right after (no delay: the id is almost
// certainly not committed; short delay: sometimes it is). After a restart
// the daemon must adopt the media through the idempotency handle (JW
// external_id search, Wistia name search): exactly one media per file.
func TestCrashBetweenRegistrationAndCommit(t *testing.T) {
	type mk func(t *testing.T, px *testenv.Proxy) *platform
	jw := func(t *testing.T, px *testenv.Proxy) *platform {
		f, p := jwPlatform(t, "c2-jw", px, "")
		p.hook = newHook(false)
		f.OnCreated(p.hook.fire)
		return p
	}
	wistia := func(t *testing.T, px *testenv.Proxy) *platform {
		f, p := wistiaPlatform(t, "c2-wi", px)
		p.hook = newHook(false)
		f.OnCopied(p.hook.fire)
		return p
	}
	cases := []struct {
		name  string
		make  mk
		delay time.Duration
	}{
		{"jwplayer-create/at-once", jw, 0},
		{"jwplayer-create/after-20ms", jw, 20 * time.Millisecond},
		{"wistia-s3_copy/at-once", wistia, 0},
		{"wistia-s3_copy/after-20ms", wistia, 20 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			px := testenv.NewProxy(t, minio.Endpoint)
			p := c.make(t, px)
			s := newSite(t, p.dest)
			data := media("clip.mp4", 200<<10)
			s.start()
			s.drop("clip.mp4", data)
			recv(t, p.hook.hit, 30*time.Second, "create/copy answered", s)
			if c.delay > 0 {
				time.Sleep(c.delay) // the crash point itself is the variable here
			}
			s.kill()
			before, _ := s.job("clip.mp4")
			t.Logf("at the kill: job %s, %s vendor_id %q (committed: %v)", before.State, p.dest.name,
				before.dest(p.dest.name).VendorID, before.dest(p.dest.name).VendorID != "")

			s.start()
			j := s.waitState("clip.mp4", 30*time.Second, "done", "failed")
			if j.State != "done" {
				t.Fatalf("job ended %s: %s\n%s", j.State, j.Error, s.tail())
			}
			ids := p.ids()
			if len(ids) != 1 || p.creates() != 1 {
				t.Fatalf("platform holds %v (%d created), want exactly one media\n%s", ids, p.creates(), s.tail())
			}
			d := j.dest(p.dest.name)
			if d.State != "done" || d.VendorID != ids[0] {
				t.Errorf("list --json destination %+v, want done with vendor_id %s", d, ids[0])
			}
			if got := s.receipt("clip.mp4").vendorID(p.dest.name); got != ids[0] {
				t.Errorf("processed/clip.mp4.receipt.json vendor_id %q, want %s", got, ids[0])
			}
			s.assertNoSecrets(p.secrets()...)
		})
	}
}
