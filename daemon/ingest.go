package daemon

import (
	"context"
	"errors"
	"slices"

	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/etcdstore"
	"github.com/watchfolder/watchfolder/watcher"
)

// maxIngestBatch bounds how many events share one commit.
const maxIngestBatch = 512

// ingest turns watcher events into job state. It is the only writer of
// waiting/queued transitions driven by the filesystem. Events that are
// already waiting are taken together, so a burst of new files costs one
// commit (one fsync) per batch instead of one per file.
func (d *Daemon) ingest(ctx context.Context, events <-chan watcher.Event) {
	batch := make([]watcher.Event, 0, maxIngestBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case ack := <-d.heartbeat:
			close(ack)
			continue
		case ev := <-events:
			batch = append(batch[:0], ev)
		}
	drain:
		for len(batch) < maxIngestBatch {
			select {
			case ev := <-events:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		d.handleEvents(ctx, batch)
	}
}

func (d *Daemon) handleEvents(ctx context.Context, batch []watcher.Event) {
	// Jobs this batch will create, by folder+path, so that a Seen and a
	// Ready for the same file in one batch make one job, not two.
	pending := map[string]*state.Job{}
	ready := map[uint64]readyFile{}
	defer d.queueWaiting(ctx, ready)
	var creates []*state.Job
	lc := d.prefetchLatest(ctx, batch)
	for _, ev := range batch {
		if !d.cl.scanning(ev.Folder, ev.Path) {
			continue // another node is the folder's elected scanner
		}
		key := ev.Folder + "\x00" + ev.RelPath
		if pj, ok := pending[key]; ok {
			switch ev.Kind {
			case watcher.Ready:
				setVersion(pj, ev.Info)
				pj.State = state.Queued
			case watcher.Vanished:
				if pj.State == state.Waiting {
					pj.State = "" // never committed: drop it
				}
			}
			continue
		}
		j, err := d.handleEvent(ctx, ev, ready, lc)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("record file event", "path", ev.Path, "err", err)
			}
			continue
		}
		if j != nil {
			pending[key] = j
			creates = append(creates, j)
		}
	}
	creates = dropEmptyState(creates)
	if len(creates) == 0 {
		return
	}
	if err := d.store.CreateMany(ctx, creates); err != nil {
		// One bad record must not lose the others: fall back to one by one.
		d.log.Warn("batch create failed; creating jobs one by one", "jobs", len(creates), "err", err)
		var ok []*state.Job
		for _, j := range creates {
			if j.ID != 0 {
				ok = append(ok, j) // committed before the failure (etcd batches)
				continue
			}
			if err := d.store.Create(ctx, j); errors.Is(err, etcdstore.ErrActive) {
				// Another node created the job first (scanner handover): the
				// next scan finds it and leaves it to its owner.
				d.log.Info("file already has a job on another node", "path", j.Path)
				d.watcher.Load().Forget(j.Path)
				continue
			} else if err != nil {
				// The watcher reports it again at its next scan, so a
				// file found while the disk was full gets its job later.
				d.log.Error("record new file; will try again at the next scan", "path", j.Path, "err", err)
				d.watcher.Load().Forget(j.Path)
				continue
			}
			ok = append(ok, j)
		}
		creates = ok
	}
	for _, j := range creates {
		if j.State == state.Queued {
			d.sched.push(j.ID)
		}
	}
}

func dropEmptyState(jobs []*state.Job) []*state.Job {
	out := jobs[:0]
	for _, j := range jobs {
		if j.State != "" {
			out = append(out, j)
		}
	}
	return out
}

// handleEvent applies ev to an existing job, or returns a new job for the
// caller to create; a waiting job whose file is ready goes into ready for
// the caller to queue with the rest of the batch.
func (d *Daemon) handleEvent(ctx context.Context, ev watcher.Event, ready map[uint64]readyFile, lc *latestCache) (*state.Job, error) {
	rt := d.rt.Load()
	f, ok := rt.folders[ev.Folder]
	if !ok {
		return nil, nil // a folder removed by a reload; its old watcher is stopping
	}
	if d.rejectBadName(ev) {
		return nil, nil
	}
	if _, claimed := d.claims.Load(claimKey(ev.Folder, ev.RelPath)); claimed {
		return nil, nil // a retry is moving this file back for its old job
	}
	latest, err := d.latest(ctx, lc, ev.Folder, ev.RelPath)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	if latest != nil && latest.State.Terminal() {
		// A new job, even for the bytes an earlier job delivered (moved
		// back by hand): its worker finds that out and sends nothing
		// again (skipDelivered).
		latest = nil
	}
	switch ev.Kind {
	case watcher.Seen:
		if latest != nil {
			return nil, nil // in the pipeline already; workers notice changes
		}
		return d.newJob(rt, f.Name, ev, state.Waiting), nil
	case watcher.Vanished:
		if latest != nil && latest.State == state.Waiting {
			d.transition(ctx, latest.ID, state.Gone, "file vanished before it was finished")
		}
		return nil, nil
	case watcher.Ready:
		if latest == nil {
			return d.newJob(rt, f.Name, ev, state.Queued), nil
		}
		if latest.State != state.Waiting {
			return nil, nil // queued or further: the worker checks the version
		}
		ready[latest.ID] = readyFile{ev.Path, ev.Info} // queued with the batch's other changes
	}
	return nil, nil
}

// readyFile is a waiting job's file that the watcher reported stable.
type readyFile struct {
	path string
	info watcher.FileInfo
}

// queueWaiting moves waiting jobs whose file is now ready to queued, in one
// commit for the whole batch (falling back to one by one if that fails).
// A job that cannot be queued (a full disk) is reported again by the
// watcher at its next scan.
func (d *Daemon) queueWaiting(ctx context.Context, ready map[uint64]readyFile) {
	if len(ready) == 0 {
		return
	}
	ids := make([]uint64, 0, len(ready))
	for id := range ready {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	queue := func(j *state.Job) error {
		if j.State != state.Waiting {
			return nil // a worker or a retry got there first
		}
		setVersion(j, ready[j.ID].info)
		j.State = state.Queued
		j.Error = ""
		return nil
	}
	if _, err := d.store.UpdateMany(ctx, ids, queue); err != nil {
		d.log.Warn("batch update failed; queueing jobs one by one", "jobs", len(ids), "err", err)
		for _, id := range ids {
			if _, err := d.store.Update(ctx, id, queue); err != nil {
				d.log.Error("queue ready file; will try again at the next scan", "job", id, "err", err)
				d.watcher.Load().Forget(ready[id].path)
				delete(ready, id)
			}
		}
	}
	for _, id := range ids {
		if _, ok := ready[id]; ok {
			d.sched.push(id)
		}
	}
}

func setVersion(j *state.Job, fi watcher.FileInfo) {
	j.Size, j.ModTime, j.Inode, j.Device = fi.Size, fi.ModTime, fi.Inode, fi.Device
}

func (d *Daemon) newJob(rt *runtime, folder string, ev watcher.Event, st state.State) *state.Job {
	j := &state.Job{Folder: folder, Path: ev.Path, RelPath: ev.RelPath, State: st}
	setVersion(j, ev.Info)
	for _, name := range rt.folders[folder].Destinations {
		typ := ""
		if dc, ok := rt.cfg.Destinations[name]; ok {
			typ = dc.Type
		}
		j.Destinations = append(j.Destinations, state.Dest{Name: name, Type: typ, State: state.DestPending})
	}
	return j
}

func claimKey(folder, relpath string) string { return folder + "\x00" + relpath }
