package probe

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestFFprobeAddsFacts(t *testing.T) {
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Fatalf("ffprobe is required (make test-deps installs ffmpeg): %v", err)
	}
	dir := shared.get(t)
	fs := fixtures()
	frag := fs[3]
	ctx := context.Background()

	// The fragmented MP4's duration and frame rate are not in its header;
	// ffprobe fills them, the structure verdict stays the built-in one.
	p := filepath.Join(dir, frag.name)
	built, err := File(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FFprobe(ctx, "", p, built)
	if err != nil {
		t.Fatal(err)
	}
	if got.Duration.Seconds() < 2.9 || got.Duration.Seconds() > 3.1 || got.Video.FrameRate != 25 || !got.Checked {
		t.Fatalf("ffprobe facts %+v %+v, want 3 s at 25 fps, checked", got, got.Video)
	}

	// Built-in facts are kept where they exist; codec names agree.
	p = filepath.Join(dir, fs[0].name)
	built, _ = File(ctx, p)
	got, err = FFprobe(ctx, "", p, built)
	if err != nil || got.Video.Codec != "h264" || got.Audio.Codec != "aac" || got.Video.Width != 320 {
		t.Fatalf("got %+v %+v %+v, %v", got, got.Video, got.Audio, err)
	}

	// A file ffprobe cannot read fails with a reason.
	bad := filepath.Join(t.TempDir(), "noise.ts")
	if err := os.WriteFile(bad, []byte("not a transport stream at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	built, err = File(ctx, bad)
	if err != nil || built.Checked {
		t.Fatalf("built-in on noise: %+v %v", built, err)
	}
	_, err = FFprobe(ctx, "", bad, built)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeFFprobeFailure {
		t.Fatalf("got %v, want an ffprobe failure", err)
	}

	// Not installed: a wrapped exec.ErrNotFound, facts unchanged.
	same, err := FFprobe(ctx, "ffprobe-that-is-not-installed", p, built)
	if !errors.Is(err, exec.ErrNotFound) || same.Container != built.Container {
		t.Fatalf("got %v, want exec.ErrNotFound", err)
	}
}
