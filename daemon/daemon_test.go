package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/watchfolder/watchfolder/state"
)

func TestDeliversToS3AndFilesIntoProcessed(t *testing.T) {
	h := newHarness(t, hopts{folderExtra: "receipts = true"})
	data := content("clip", 1<<20)
	writeFile(t, filepath.Join(h.inbox, "sub", "clip.mp4"), data)
	writeFile(t, filepath.Join(h.inbox, "sub", "clip.json"), []byte(`{"title":"Evening news","tags":["news"]}`))

	j := h.waitState(state.Done, 1, 20*time.Second)[0]
	if got := minio.GetObject(t, h.bucket, "news/sub/clip.mp4"); !bytes.Equal(got, data) {
		t.Fatalf("object differs: %d bytes, want %d", len(got), len(data))
	}
	sum := sha256.Sum256(data)
	if j.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("job sha256 = %q, want %x", j.SHA256, sum)
	}
	want := filepath.Join(h.processed, "sub", "clip.mp4")
	if j.FinalPath != want {
		t.Errorf("final path = %s, want %s", j.FinalPath, want)
	}
	if got, err := os.ReadFile(want); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("processed file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.processed, "sub", "clip.json")); err != nil {
		t.Errorf("sidecar not moved with the media: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.inbox, "sub")); !os.IsNotExist(err) {
		t.Errorf("emptied subdirectory left in the inbox: %v", err)
	}
	var rc struct {
		SHA256       string
		Destinations []struct{ Name, Object string }
	}
	raw, err := os.ReadFile(want + ".receipt.json")
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	if err := json.Unmarshal(raw, &rc); err != nil || rc.SHA256 != j.SHA256 || len(rc.Destinations) != 1 ||
		rc.Destinations[0].Object != "s3://"+h.bucket+"/news/sub/clip.mp4" {
		t.Errorf("receipt = %s (err %v)", raw, err)
	}
	d := j.Dest("archive")
	if d.State != state.DestDone || d.Object != "s3://"+h.bucket+"/news/sub/clip.mp4" {
		t.Errorf("destination = %+v", d)
	}
	if n := h.proxy.Writes(h.bucket + "/news/sub/clip.mp4"); n != 1 {
		t.Errorf("object written %d times, want 1", n)
	}
	// Plain S3 has nothing to register: a small file's single PUT is
	// committed with the move to moving (see quickStart).
	wantStates := []state.State{state.Queued, state.Moving, state.Done}
	var got []state.State
	for _, tr := range j.History {
		if tr.To != "" && (len(got) == 0 || got[len(got)-1] != tr.To) {
			got = append(got, tr.To)
		}
	}
	if !slices.Equal(got[len(got)-len(wantStates):], wantStates) {
		t.Errorf("history states = %v, want to end with %v", got, wantStates)
	}
}

// An export written in 1 MiB chunks, 1 s apart, with the file held open:
// quiet periods are longer than stable_after, so only the writer probe keeps
// the half-written file from being uploaded.
func TestSlowExportUploadedOnceWhenFinished(t *testing.T) {
	h := newHarness(t, hopts{})
	path := filepath.Join(h.inbox, "export.mov")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range 6 {
		chunk := content(fmt.Sprintf("chunk%d", i), 1<<20)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		all = append(all, chunk...)
		time.Sleep(time.Second) // the editor's pace, not a wait for a condition
		for _, j := range h.jobs() {
			if j.State != state.Waiting {
				t.Fatalf("job %d is %s while the file is still being written", j.ID, j.State)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	j := h.waitState(state.Done, 1, 20*time.Second)[0]
	if j.Size != int64(len(all)) {
		t.Errorf("job size %d, want %d", j.Size, len(all))
	}
	if got := minio.GetObject(t, h.bucket, "news/export.mov"); !bytes.Equal(got, all) {
		t.Fatalf("object is %d bytes, want the finished %d", len(got), len(all))
	}
	if n := h.proxy.Writes(h.bucket + "/news/export.mov"); n != 1 {
		t.Errorf("object written %d times, want 1", n)
	}
	if n := len(h.jobs()); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

func TestTempAndSystemFilesNeverUploaded(t *testing.T) {
	h := newHarness(t, hopts{})
	data := content("final", 200<<10)
	tmp := filepath.Join(h.inbox, ".final.mp4.tmp")
	writeFile(t, tmp, data)
	junk := []string{"._final.mp4", ".DS_Store", "render.part", "Thumbs.db", "~$notes.mp4", "clip.mp4.crdownload"}
	for _, n := range junk {
		writeFile(t, filepath.Join(h.inbox, n), []byte("junk"))
	}
	if err := os.Rename(tmp, filepath.Join(h.inbox, "final.mp4")); err != nil {
		t.Fatal(err)
	}
	h.waitState(state.Done, 1, 20*time.Second)
	// One more rescan cycle (2s) must not pick the junk up either.
	h.d.watcher.Load().Rescan()
	time.Sleep(500 * time.Millisecond)
	keys := minio.ListKeys(t, h.bucket)
	if !slices.Equal(keys, []string{"news/final.mp4"}) {
		t.Fatalf("bucket keys = %v, want only news/final.mp4", keys)
	}
	if n := h.proxy.Writes(h.bucket + "/news/final.mp4"); n != 1 {
		t.Errorf("final.mp4 written %d times, want 1", n)
	}
	for _, n := range junk {
		if _, err := os.Stat(filepath.Join(h.inbox, n)); err != nil {
			t.Errorf("%s was touched: %v", n, err)
		}
	}
	if n := len(h.jobs()); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

func TestSubdirectoryCreatedAfterStart(t *testing.T) {
	h := newHarness(t, hopts{})
	// A directory with files already inside, moved in at once: the files
	// land before the watch on it exists.
	staging := filepath.Join(h.dir, "staging", "day1")
	writeFile(t, filepath.Join(staging, "a.mp4"), content("a", 1000))
	writeFile(t, filepath.Join(staging, "deeper", "b.mxf"), content("b", 2000))
	if err := os.Rename(staging, filepath.Join(h.inbox, "day1")); err != nil {
		t.Fatal(err)
	}
	// And one created and filled right away.
	writeFile(t, filepath.Join(h.inbox, "day2", "c.mov"), content("c", 3000))
	h.waitState(state.Done, 3, 20*time.Second)
	keys := minio.ListKeys(t, h.bucket)
	slices.Sort(keys)
	want := []string{"news/day1/a.mp4", "news/day1/deeper/b.mxf", "news/day2/c.mov"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %v, want %v", keys, want)
	}
}

func TestBurstOf200Files(t *testing.T) {
	h := newHarness(t, hopts{stableAfter: "0s"})
	// Write elsewhere and rename in, as a copy tool finishing would.
	stage := filepath.Join(h.dir, "stage")
	want := map[string][]byte{}
	for i := range 200 {
		name := fmt.Sprintf("clip-%03d.mp4", i)
		data := content(name, 4096+i*37)
		want[name] = data
		writeFile(t, filepath.Join(stage, name), data)
	}
	for name := range want {
		if err := os.Rename(filepath.Join(stage, name), filepath.Join(h.inbox, name)); err != nil {
			t.Fatal(err)
		}
	}
	h.waitState(state.Done, 200, 90*time.Second)
	for name, data := range want {
		if got := minio.GetObject(t, h.bucket, "news/"+name); !bytes.Equal(got, data) {
			t.Fatalf("%s: content differs", name)
		}
		if _, err := os.Stat(filepath.Join(h.processed, name)); err != nil {
			t.Fatalf("%s not in processed: %v", name, err)
		}
		// receipts is off by default.
		if _, err := os.Stat(filepath.Join(h.processed, name+ReceiptSuffix)); !os.IsNotExist(err) {
			t.Fatalf("%s: receipt written though receipts is off (%v)", name, err)
		}
	}
	for key, n := range h.proxy.AllWrites() {
		if n != 1 {
			t.Errorf("%s written %d times", key, n)
		}
	}
	entries, _ := os.ReadDir(h.inbox)
	for _, e := range entries {
		if !e.IsDir() && e.Name() != FolderLockName {
			t.Errorf("left in the inbox: %s", e.Name())
		}
	}
}

func TestS3OutageRetriesThenDelivers(t *testing.T) {
	h := newHarness(t, hopts{retry: "max_attempts = 20\ninitial_backoff = \"200ms\"\nmax_backoff = \"500ms\""})
	h.proxy.SetDown(true)
	data := content("outage", 300<<10)
	writeFile(t, filepath.Join(h.inbox, "late.mp4"), data)
	deadline := time.Now().Add(30 * time.Second)
	for {
		js := h.jobs()
		if len(js) == 1 && js[0].Attempts >= 2 {
			if js[0].State != state.Retry && js[0].State != state.Uploading && js[0].State != state.Queued {
				t.Fatalf("job is %s during the outage", js[0].State)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no retries seen during the outage: %+v", js)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.proxy.SetDown(false)
	j := h.waitState(state.Done, 1, 30*time.Second)[0]
	if j.Attempts < 2 {
		t.Errorf("attempts = %d, want >= 2", j.Attempts)
	}
	if got := minio.GetObject(t, h.bucket, "news/late.mp4"); !bytes.Equal(got, data) {
		t.Fatal("object differs")
	}
}

func TestWrongCredentialsFailWithReason(t *testing.T) {
	h := newHarness(t, hopts{secret: "not-the-secret"})
	writeFile(t, filepath.Join(h.inbox, "denied.mp4"), content("denied", 1000))
	j := h.waitState(state.Failed, 1, 30*time.Second)[0]
	if j.Attempts < 1 || j.Attempts > 3 {
		t.Errorf("attempts = %d, want 1..3 (max_attempts)", j.Attempts)
	}
	reasonPath := filepath.Join(h.failed, "denied.mp4.error.txt")
	reason, err := os.ReadFile(reasonPath)
	if err != nil {
		t.Fatalf("reason file: %v", err)
	}
	for _, want := range []string{"denied.mp4", "destination archive", "Attempts:", "Last error:"} {
		if !strings.Contains(string(reason), want) {
			t.Errorf("reason file lacks %q:\n%s", want, reason)
		}
	}
	if strings.Contains(string(reason), "not-the-secret") || strings.Contains(h.logs.String(), "not-the-secret") {
		t.Error("the secret key appears in the reason file or the log")
	}
	if _, err := os.Stat(filepath.Join(h.failed, "denied.mp4")); err != nil {
		t.Errorf("file not moved to failed: %v", err)
	}
	if len(minio.ListKeys(t, h.bucket)) != 0 {
		t.Error("something was written with wrong credentials")
	}
}

func TestEmptyFileFails(t *testing.T) {
	h := newHarness(t, hopts{})
	writeFile(t, filepath.Join(h.inbox, "empty.mp4"), nil)
	h.waitState(state.Failed, 1, 20*time.Second)
	reason, err := os.ReadFile(filepath.Join(h.failed, "empty.mp4.error.txt"))
	if err != nil || !strings.Contains(string(reason), "empty file") {
		t.Fatalf("reason = %q, %v", reason, err)
	}
}

func TestMalformedSidecarFails(t *testing.T) {
	h := newHarness(t, hopts{})
	writeFile(t, filepath.Join(h.inbox, "clip.json"), []byte(`{"title": `))
	writeFile(t, filepath.Join(h.inbox, "clip.mp4"), content("x", 1000))
	h.waitState(state.Failed, 1, 20*time.Second)
	reason, err := os.ReadFile(filepath.Join(h.failed, "clip.mp4.error.txt"))
	if err != nil || !strings.Contains(string(reason), "sidecar clip.json is malformed") {
		t.Fatalf("reason = %q, %v", reason, err)
	}
	if _, err := os.Stat(filepath.Join(h.failed, "clip.json")); err != nil {
		t.Errorf("sidecar not moved with the media: %v", err)
	}
}

func TestRestartResumesQueuedJobs(t *testing.T) {
	h := newHarness(t, hopts{})
	h.proxy.SetDown(true)
	writeFile(t, filepath.Join(h.inbox, "resume.mp4"), content("resume", 5000))
	deadline := time.Now().Add(20 * time.Second)
	for len(h.jobs()) == 0 || h.jobs()[0].Attempts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("job never attempted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.stop()
	h.proxy.SetDown(false)
	h.start()
	h.waitState(state.Done, 1, 20*time.Second)
	if n := len(h.jobs()); n != 1 {
		t.Errorf("%d jobs after restart, want 1", n)
	}
}

// A multipart upload created but never committed (a crash in between) is
// aborted at the next start once older than the guard; one a job still
// holds is kept.
func TestStartAbortsOrphanedMultipartUploads(t *testing.T) {
	h := newHarness(t, hopts{})
	h.stop()
	c := minio.Client()
	ctx := context.Background()
	orphan, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &h.bucket, Key: aws.String("news/crashed.mp4")})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &h.bucket, Key: aws.String("elsewhere/keep.mp4")})
	if err != nil {
		t.Fatal(err)
	}
	h.orphanGuard = time.Nanosecond
	h.start()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &h.bucket})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range out.Uploads {
			ids = append(ids, aws.ToString(u.UploadId))
		}
		if !slices.Contains(ids, aws.ToString(orphan.UploadId)) {
			if !slices.Contains(ids, aws.ToString(other.UploadId)) {
				t.Fatal("an upload outside the destination's prefix was aborted")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphaned upload still open: %v", ids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCompanionPathFitsNameMax(t *testing.T) {
	tests := []struct {
		name, media, suffix string
	}{
		{"short", "/p/clip.mp4", ReceiptSuffix},
		{"exact fit", "/p/" + strings.Repeat("a", 255-len(ReasonSuffix)), ReasonSuffix},
		{"too long", "/p/" + strings.Repeat("b", 251) + ".mp4", ReceiptSuffix},
		{"multibyte cut", "/p/" + strings.Repeat("é", 120) + ".mp4", ReceiptSuffix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CompanionPath(tt.media, tt.suffix)
			base := filepath.Base(got)
			if len(base) > 255 || !strings.HasSuffix(got, tt.suffix) || filepath.Dir(got) != filepath.Dir(tt.media) {
				t.Fatalf("CompanionPath = %q (%d bytes)", got, len(base))
			}
			if !utf8.ValidString(base) {
				t.Fatalf("cut inside a character: %q", base)
			}
			if len(filepath.Base(tt.media))+len(tt.suffix) <= 255 && got != tt.media+tt.suffix {
				t.Fatalf("shortened a name that fits: %q", got)
			}
			if CompanionPath(tt.media+"x", tt.suffix) == got {
				t.Fatal("two media names share a companion name")
			}
		})
	}
}
