package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
)

// pauseFile is kept beside state.db so a pause survives a restart. It is
// a small JSON file rather than a DB record so that an operator can read
// (or, with the daemon stopped, remove) it by hand.
const pauseFile = "paused.json"

// pauseState is which folders are paused, and the jobs workers set aside
// because of it. Paused folders still record new files; workers only do
// not start their queued jobs. Jobs already uploading carry on.
type pauseState struct {
	path string

	mu      sync.Mutex
	all     bool
	folders map[string]bool
	parked  map[uint64]string // job id -> folder
}

type pauseDoc struct {
	All     bool     `json:"all"`
	Folders []string `json:"folders"`
}

func loadPauseState(stateDir string) (*pauseState, error) {
	p := &pauseState{path: filepath.Join(stateDir, pauseFile), folders: map[string]bool{}, parked: map[uint64]string{}}
	data, err := os.ReadFile(p.path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pause state: %w", err)
	}
	var doc pauseDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("pause state %s is malformed (fix or remove it): %w", p.path, err)
	}
	p.all = doc.All
	for _, f := range doc.Folders {
		p.folders[f] = true
	}
	return p, nil
}

// saveLocked writes the file atomically (temp file, fsync, rename).
func (p *pauseState) saveLocked() error {
	doc := pauseDoc{All: p.all, Folders: []string{}}
	for f := range p.folders {
		doc.Folders = append(doc.Folders, f)
	}
	sort.Strings(doc.Folders)
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode pause state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o700); err != nil {
		return fmt.Errorf("save pause state: %w", err)
	}
	if err := mover.WriteFileAtomic(p.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save pause state: %w", err)
	}
	return nil
}

func (p *pauseState) pausedLocked(folder string) bool { return p.all || p.folders[folder] }

func (p *pauseState) paused(folder string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pausedLocked(folder)
}

// list is "*" when everything is paused, else the paused folder names.
func (p *pauseState) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []string{}
	if p.all {
		out = append(out, "*")
	}
	for f := range p.folders {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// set pauses (on) or resumes folder; "" means every folder. allFolders is
// needed to resume one folder while all are paused.
func (p *pauseState) set(folder string, on bool, allFolders []string) ([]uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prevAll, prevFolders := p.all, maps.Clone(p.folders)
	switch {
	case folder == "" && on:
		p.all = true
	case folder == "":
		p.all = false
		clear(p.folders)
	case on:
		p.folders[folder] = true
	default:
		if p.all {
			// Resume one of all: pause the others by name instead.
			p.all = false
			for _, f := range allFolders {
				p.folders[f] = true
			}
		}
		delete(p.folders, folder)
	}
	if err := p.saveLocked(); err != nil {
		p.all, p.folders = prevAll, prevFolders
		return nil, err
	}
	var release []uint64
	for id, f := range p.parked {
		if !p.pausedLocked(f) {
			release = append(release, id)
			delete(p.parked, id)
		}
	}
	slices.Sort(release) // oldest first, as they were queued
	return release, nil
}

// park sets j aside when its folder is paused. It reports whether it did;
// the check and the parking happen under one lock so a resume cannot slip
// between them and leave the job parked for good.
func (d *Daemon) park(j *state.Job) bool {
	if j.State != state.Queued && j.State != state.Retry && j.State != state.Probing {
		return false
	}
	p := d.pause
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.pausedLocked(j.Folder) {
		return false
	}
	if _, ok := p.parked[j.ID]; !ok {
		d.log.Info("folder is paused; job waits for resume", "job", j.ID, "folder", j.Folder, "path", j.Path)
	}
	p.parked[j.ID] = j.Folder
	return true
}

// unparkAll hands every parked job back to the scheduler; each is parked
// again at once if its folder is still paused.
func (d *Daemon) unparkAll() {
	p := d.pause
	p.mu.Lock()
	ids := make([]uint64, 0, len(p.parked))
	for id := range p.parked {
		ids = append(ids, id)
	}
	clear(p.parked)
	p.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		d.sched.push(id)
	}
}

// SetPaused pauses or resumes a folder ("" for all) and persists it.
func (d *Daemon) SetPaused(folder string, on bool) error {
	rt := d.rt.Load()
	if folder != "" {
		if _, ok := rt.folders[folder]; !ok {
			return fmt.Errorf("no folder %q is configured: %w", folder, state.ErrNotFound)
		}
	}
	var names []string
	for _, f := range rt.cfg.Folders {
		names = append(names, f.Name)
	}
	release, err := d.pause.set(folder, on, names)
	if err != nil {
		return err
	}
	if err := d.cl.publishPause(context.Background(), d.pause); err != nil {
		return fmt.Errorf("paused on this node only: %w", err)
	}
	what := folder
	if what == "" {
		what = "all folders"
	}
	if on {
		d.log.Info("paused: new jobs wait until resume", "folder", what)
	} else {
		d.log.Info("resumed", "folder", what, "released_jobs", len(release))
	}
	for _, id := range release {
		d.sched.push(id)
	}
	return nil
}
