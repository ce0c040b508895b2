package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/probe"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/web"
)

// ffprobeTimeout bounds one ffprobe run; the built-in check needs no limit
// of its own (it reads a few kilobytes).
const ffprobeTimeout = 2 * time.Minute

// probeMedia is the step between queued and uploading: it checks the
// file's container (the folder's probe setting) and records the media
// facts on the job. It reports false when the job does not go on now
// (failed, retrying, shutting down, or a commit failed); the step then
// says what the worker does next.
//
// The probing commit carries the facts. A quickStart job skips it, as it
// skips its uploading commit: its facts ride on the destinations' final
// commit (the probe of a small file takes microseconds, a crash meanwhile
// just probes it again).
func (d *Daemon) probeMedia(ctx context.Context, j *state.Job, f *config.Folder, sidecar string) (step, bool) {
	if f.Probe == "off" {
		return next, true
	}
	facts, err := probe.File(ctx, j.Path)
	var verdict *probe.Error
	if err == nil && f.Probe == "ffprobe" {
		fctx, cancel := context.WithTimeout(ctx, ffprobeTimeout)
		facts, err = probe.FFprobe(fctx, "", j.Path, facts)
		cancel()
		if errors.Is(err, exec.ErrNotFound) {
			d.log.Warn("probe = \"ffprobe\" but ffprobe is not installed; using the built-in check alone", "folder", f.Name)
			err = nil
		}
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return stop, false
	case !errors.As(err, &verdict):
		// The file could not be read: not a verdict on the media.
		return stepIf(d.fail(ctx, j, []destErr{{err: fmt.Errorf("media check: %w", err)}}, false)), false
	case f.Probe == "warn":
		facts.Problem = verdict.Error()
		d.log.Warn("media check failed; delivering anyway (probe = \"warn\")", "job", j.ID, "path", j.Path, "err", verdict)
	}
	raw, jerr := json.Marshal(facts)
	if jerr != nil {
		d.log.Error("encode media facts", "job", j.ID, "err", jerr)
		return stop, false
	}
	if verdict == nil || facts.Problem != "" {
		j.Media = raw
		if quickStart(j, d.rt.Load()) {
			return next, true
		}
	}
	mem := j
	cur, uerr := d.commit(ctx, j.ID, "media check", func(j *state.Job) error {
		j.State = state.Probing
		j.Media = raw
		j.Sidecar = sidecar // travels to failed_dir with the file
		if j.CTime.IsZero() {
			j.CTime = mem.CTime // the version this attempt read
		}
		return nil
	})
	if uerr != nil {
		return stop, false // commit logged it and tries again
	}
	if verdict == nil || facts.Problem != "" {
		// Keep the worker's copy (what it learnt of the file this
		// attempt); only the state and the facts moved on.
		j.State, j.Media = cur.State, cur.Media
		return next, true
	}
	// An export cut short may be one still being written by a writer that
	// paused longer than stable_after: the first such verdict waits one
	// retry backoff (a file that changes meanwhile goes back to waiting);
	// the second, or a damaged file, is final.
	permanent := !verdict.Incomplete || j.Attempts > 0
	return stepIf(d.fail(ctx, cur, []destErr{{err: verdict}}, permanent)), false
}

// mediaFacts decodes the facts recorded on a job; nil when there are none.
func mediaFacts(j *state.Job) *probe.Facts {
	if len(j.Media) == 0 {
		return nil
	}
	var f probe.Facts
	if err := json.Unmarshal(j.Media, &f); err != nil {
		return nil
	}
	return &f
}

// webFacts lists the facts for the status page, in the order people read
// them.
func webFacts(f *probe.Facts) []web.Fact {
	if f == nil {
		return nil
	}
	c := f.Container
	if f.Pattern != "" {
		c += " " + f.Pattern
	}
	if !f.Checked {
		c += " (not checked)"
	}
	out := []web.Fact{{Name: "container", Value: c}}
	add := func(name, value string) {
		if value != "" {
			out = append(out, web.Fact{Name: name, Value: value})
		}
	}
	if f.Duration > 0 {
		add("duration", f.Duration.Round(time.Millisecond).String())
	}
	if v := f.Video; v != nil {
		s := v.Codec
		if v.Width > 0 && v.Height > 0 {
			s += fmt.Sprintf(" %dx%d", v.Width, v.Height)
		}
		if v.FrameRate > 0 {
			s += fmt.Sprintf(" %.4g fps", v.FrameRate)
		}
		add("video", strings.TrimSpace(s))
	}
	if a := f.Audio; a != nil {
		s := a.Codec
		if a.Channels > 0 {
			s += fmt.Sprintf(" %d ch", a.Channels)
		}
		if a.SampleRate > 0 {
			s += fmt.Sprintf(" %d Hz", a.SampleRate)
		}
		add("audio", strings.TrimSpace(s))
	}
	add("problem", f.Problem)
	return out
}
