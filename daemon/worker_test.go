package daemon

import (
	"context"
	"testing"

	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/uploader"
)

// fakeDest is a destination that does nothing; local says whether it
// claims a local Register (as plain S3 does).
type fakeDest struct {
	name  string
	local bool
}

func (f fakeDest) Name() string { return f.name }
func (f fakeDest) Type() string { return "fake" }
func (f fakeDest) Upload(context.Context, *uploader.Source, *uploader.Checkpoint, uploader.Session) error {
	return nil
}
func (f fakeDest) Register(context.Context, *uploader.Source, *uploader.Checkpoint, uploader.Session) error {
	return nil
}
func (f fakeDest) Abort(context.Context, *uploader.Checkpoint) error { return nil }

type localFakeDest struct{ fakeDest }

func (localFakeDest) RegisterIsLocal() bool { return true }

// Only small files whose remaining destinations all register locally skip
// their own "uploading" commit: anything with a platform to register with,
// or big enough to take a while, is committed as uploading first.
func TestQuickStartOnlySmallFilesToLocalRegisterDestinations(t *testing.T) {
	rt := &runtime{dests: map[string]uploader.Destination{
		"s3a": localFakeDest{fakeDest{name: "s3a"}},
		"s3b": localFakeDest{fakeDest{name: "s3b"}},
		"jw":  fakeDest{name: "jw"},
	}}
	dest := func(name string, st state.DestState) state.Dest { return state.Dest{Name: name, State: st} }
	tests := []struct {
		name  string
		size  int64
		dests []state.Dest
		want  bool
	}{
		{"small to plain S3", 256 << 10, []state.Dest{dest("s3a", state.DestPending)}, true},
		{"1 MiB to two S3 stores", quickStartMax, []state.Dest{dest("s3a", state.DestPending), dest("s3b", state.DestFailed)}, true},
		{"just over 1 MiB", quickStartMax + 1, []state.Dest{dest("s3a", state.DestPending)}, false},
		{"a platform among them", 1000, []state.Dest{dest("s3a", state.DestPending), dest("jw", state.DestPending)}, false},
		{"platform already done", 1000, []state.Dest{dest("s3a", state.DestPending), dest("jw", state.DestDone)}, true},
		{"destination no longer configured", 1000, []state.Dest{dest("gone", state.DestPending)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &state.Job{Size: tt.size, Destinations: tt.dests}
			if got := quickStart(j, rt); got != tt.want {
				t.Fatalf("quickStart = %v, want %v", got, tt.want)
			}
		})
	}
}

// The filer's commit for a quickStart job takes it from queued (or retry)
// through uploading to moving in one step, with every destination's result
// and the planned target.
func TestResultCommitMovesAQuickJobToMoving(t *testing.T) {
	d := &Daemon{}
	rt := &runtime{}
	mem := &state.Job{ID: 7, Sidecar: "/in/clip.json"}
	commit := d.resultCommit(mem, rt, []destResult{
		{name: "a", cp: &uploader.Checkpoint{Uploaded: true, Object: "s3://b/clip.mp4", SHA256: "ab"}, raw: []byte(`{"uploaded":true}`)},
		{name: "b", cp: &uploader.Checkpoint{Uploaded: true, Object: "s3://c/clip.mp4"}, raw: []byte(`{"uploaded":true}`)},
	})
	for _, from := range []state.State{state.Queued, state.Retry} {
		j := &state.Job{ID: 7, State: from, Size: 10, Destinations: []state.Dest{
			{Name: "a", State: state.DestPending}, {Name: "b", State: state.DestFailed, Error: "earlier"},
		}}
		if err := commit(j); err != nil {
			t.Fatal(err)
		}
		if j.State != state.Moving || j.MoveTo != state.MoveProcessed {
			t.Fatalf("from %s: state %s move to %q, want moving to processed", from, j.State, j.MoveTo)
		}
		if j.Sidecar != mem.Sidecar || j.SHA256 != "ab" {
			t.Fatalf("from %s: sidecar %q sha256 %q not carried over", from, j.Sidecar, j.SHA256)
		}
		for _, ds := range j.Destinations {
			if ds.State != state.DestDone || ds.Error != "" || ds.BytesDone != 10 || ds.Object == "" {
				t.Fatalf("from %s: destination %+v, want done with its object", from, ds)
			}
		}
	}
	// A destination the job no longer has is an error, not a silent skip.
	j := &state.Job{ID: 7, State: state.Queued, Destinations: []state.Dest{{Name: "a", State: state.DestPending}}}
	if err := commit(j); err == nil {
		t.Fatal("commit with a missing destination succeeded")
	}
}
