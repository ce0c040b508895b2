package uploader

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A media file replaced by a FIFO or a symlink is refused at once: the open
// neither blocks (a FIFO waits for a writer) nor follows the link.
func TestOpenSourceRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "clip.mp4")
	if err := os.WriteFile(regular, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.mp4")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.mp4")
	if err := os.Symlink(regular, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path    string
		changed bool
	}{
		{regular, false},
		{fifo, true},
		{link, true},
		{filepath.Join(dir, "gone.mp4"), true},
		{dir, true},
	} {
		done := make(chan error, 1)
		go func() {
			f, err := OpenSource(tc.path)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if got := errors.Is(err, ErrSourceChanged); got != tc.changed || (!tc.changed && err != nil) {
				t.Errorf("%s: err = %v, want source-changed %v", filepath.Base(tc.path), err, tc.changed)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: open blocked", filepath.Base(tc.path))
		}
	}
}
