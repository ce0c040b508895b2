package web

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// FakeSource is an in-memory Source for the page and browser tests.
type FakeSource struct {
	mu      sync.Mutex
	folders []Folder
	jobs    map[uint64]*Job
	subs    map[chan struct{}]struct{}
	Retried []uint64
}

func NewFakeSource(folders ...string) *FakeSource {
	f := &FakeSource{jobs: map[uint64]*Job{}, subs: map[chan struct{}]struct{}{}}
	for _, n := range folders {
		f.folders = append(f.folders, Folder{Name: n, Counts: map[string]int{}})
	}
	return f
}

// Put adds or replaces a job and tells subscribers.
func (f *FakeSource) Put(j Job) {
	f.mu.Lock()
	if j.Updated.IsZero() {
		j.Updated = time.Now()
	}
	if j.Created.IsZero() {
		j.Created = j.Updated
	}
	f.jobs[j.ID] = &j
	f.mu.Unlock()
	f.Bump()
}

// SetInFlight replaces a folder's transfers.
func (f *FakeSource) SetInFlight(folder string, ts ...Transfer) {
	f.mu.Lock()
	for i := range f.folders {
		if f.folders[i].Name == folder {
			f.folders[i].InFlight = ts
		}
	}
	f.mu.Unlock()
	f.Bump()
}

// Bump tells every subscriber that something changed.
func (f *FakeSource) Bump() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *FakeSource) Summary(ctx context.Context) (*Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &Summary{Version: "test", Uptime: time.Minute}
	for _, fo := range f.folders {
		c := fo
		c.Counts = map[string]int{}
		for _, j := range f.jobs {
			if j.Folder == fo.Name {
				c.Counts[j.State]++
			}
		}
		s.Folders = append(s.Folders, c)
	}
	return s, nil
}

func (f *FakeSource) StatusJSON(ctx context.Context) (any, error) {
	s, err := f.Summary(ctx)
	return map[string]any{"version": s.Version, "folders": len(s.Folders)}, err
}

func (f *FakeSource) Jobs(ctx context.Context, q Query) (*Page, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uint64
	for id := range f.jobs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] > ids[b] })
	p := &Page{}
	for _, id := range ids {
		j := f.jobs[id]
		if q.Before != 0 && id >= q.Before {
			continue
		}
		if (q.Folder != "" && j.Folder != q.Folder) || (len(q.States) > 0 && !slices.Contains(q.States, j.State)) ||
			(q.Name != "" && !strings.Contains(strings.ToLower(j.Name), strings.ToLower(q.Name))) ||
			(!q.Since.IsZero() && j.Updated.Before(q.Since)) {
			continue
		}
		if q.Limit > 0 && len(p.Jobs) == q.Limit {
			p.Next = p.Jobs[len(p.Jobs)-1].ID
			break
		}
		c := *j
		c.History, c.Reason, c.Receipt = nil, "", ""
		p.Jobs = append(p.Jobs, c)
	}
	return p, nil
}

func (f *FakeSource) Job(ctx context.Context, id uint64) (*Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	c := *j
	return &c, nil
}

func (f *FakeSource) Changes(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, ch)
		close(ch)
		f.mu.Unlock()
	}()
	return ch
}

func (f *FakeSource) Retry(ctx context.Context, id uint64) error {
	f.mu.Lock()
	j, ok := f.jobs[id]
	if !ok {
		f.mu.Unlock()
		return ErrNotFound
	}
	if j.State != "failed" {
		f.mu.Unlock()
		return fmt.Errorf("job %d is %s: %w", id, j.State, ErrConflict)
	}
	j.State, j.Error = "queued", ""
	f.Retried = append(f.Retried, id)
	f.mu.Unlock()
	f.Bump()
	return nil
}

func (f *FakeSource) SetPaused(ctx context.Context, folder string, paused bool) error {
	f.mu.Lock()
	found := false
	for i := range f.folders {
		if f.folders[i].Name == folder {
			f.folders[i].Paused, found = paused, true
		}
	}
	f.mu.Unlock()
	if !found {
		return ErrNotFound
	}
	f.Bump()
	return nil
}

func (f *FakeSource) retried() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.Retried)
}

func (f *FakeSource) paused(folder string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fo := range f.folders {
		if fo.Name == folder {
			return fo.Paused
		}
	}
	return false
}
