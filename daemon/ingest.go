package daemon

import (
	"context"
	"errors"

	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/watcher"
)

// ingest turns watcher events into job state. It is the only writer of
// waiting/queued transitions driven by the filesystem.
func (d *Daemon) ingest(ctx context.Context, events <-chan watcher.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if err := d.handleEvent(ctx, ev); err != nil && ctx.Err() == nil {
				d.log.Error("record file event", "path", ev.Path, "err", err)
			}
		}
	}
}

func sameVersion(j *state.Job, fi watcher.FileInfo) bool {
	return j.Size == fi.Size && j.ModTime.Equal(fi.ModTime) && j.Inode == fi.Inode && j.Device == fi.Device
}

func (d *Daemon) handleEvent(ctx context.Context, ev watcher.Event) error {
	f, ok := d.folders[ev.Folder]
	if !ok {
		return nil
	}
	latest, err := d.store.Latest(ctx, ev.Folder, ev.RelPath)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if latest != nil && latest.State.Terminal() {
		if latest.State == state.Done && ev.Kind == watcher.Ready && sameVersion(latest, ev.Info) {
			// Exactly the bytes already delivered (moved back by hand, or
			// a processed dir on the same inode): never upload twice.
			d.log.Warn("file was already delivered as an earlier job; not uploading it again",
				"path", ev.Path, "job", latest.ID)
			return nil
		}
		latest = nil
	}
	switch ev.Kind {
	case watcher.Seen:
		if latest != nil {
			return nil // in the pipeline already; workers notice changes
		}
		return d.store.Create(ctx, d.newJob(f.Name, ev, state.Waiting))
	case watcher.Vanished:
		if latest != nil && latest.State == state.Waiting {
			d.transition(ctx, latest.ID, state.Gone, "file vanished before it was finished")
		}
		return nil
	case watcher.Ready:
		if latest == nil {
			j := d.newJob(f.Name, ev, state.Queued)
			if err := d.store.Create(ctx, j); err != nil {
				return err
			}
			d.sched.push(j.ID)
			return nil
		}
		if latest.State != state.Waiting {
			return nil // queued or further: the worker checks the version
		}
		_, err := d.store.Update(ctx, latest.ID, func(j *state.Job) error {
			if j.State != state.Waiting {
				return nil
			}
			setVersion(j, ev.Info)
			j.State = state.Queued
			j.Error = ""
			return nil
		})
		if err != nil {
			return err
		}
		d.sched.push(latest.ID)
	}
	return nil
}

func setVersion(j *state.Job, fi watcher.FileInfo) {
	j.Size, j.ModTime, j.Inode, j.Device = fi.Size, fi.ModTime, fi.Inode, fi.Device
}

func (d *Daemon) newJob(folder string, ev watcher.Event, st state.State) *state.Job {
	j := &state.Job{Folder: folder, Path: ev.Path, RelPath: ev.RelPath, State: st}
	setVersion(j, ev.Info)
	for _, name := range d.folders[folder].Destinations {
		typ := ""
		if dc, ok := d.cfg.Destinations[name]; ok {
			typ = dc.Type
		}
		j.Destinations = append(j.Destinations, state.Dest{Name: name, Type: typ, State: state.DestPending})
	}
	return j
}
