package e2e

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A `watchfolder list` (or any CLI probing dbLocked) that reads state.db
// while the daemon starts holds a shared lock for a moment. The daemon
// must wait for such a reader rather than exit ("state database is in use
// by another process"): an operator's status query during a restart must
// not keep the service down.
func TestDaemonStartsWhileCLIReads(t *testing.T) {
	t.Parallel()
	bucket := uniqueBucket("lock-ar")
	minio.MakeBucket(t, bucket)
	s := newSite(t, dest{"archive", "type = \"s3\"\n" + s3Table(bucket, minio.Endpoint)})
	s.start() // creates state.db
	s.stop()

	// Hold a reader's shared lock for 400ms, as a slow offline `list` does.
	db, err := bolt.Open(filepath.Join(s.dir, "state", "state.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(400 * time.Millisecond); db.Close() }()
	s.start() // fails the test if the daemon exits at start-up
	s.drop("clip.mp4", media("clip.mp4", 32<<10))
	if j := s.waitState("clip.mp4", 20*time.Second, "done", "failed"); j.State != "done" {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
}
