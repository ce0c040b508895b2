package daemon

import (
	"context"
	"strconv"
	"time"

	"github.com/watchfolder/watchfolder/uploader"
)

// settingStore is the part of the state store that keeps small named
// values; both backends have it.
type settingStore interface {
	Setting(ctx context.Context, name string) ([]byte, error)
	SetSetting(ctx context.Context, name string, value []byte) error
}

// learnedKey names where a destination's learned parts-in-flight level is
// kept. In cluster mode each node has its own: it is a property of the
// node's link.
func (d *Daemon) learnedKey(dest string) string {
	k := "streams/" + dest
	if d.cl != nil {
		k += "@" + d.cl.cfg.Node
	}
	return k
}

// restoreLearned starts each destination that learns its link's level
// where it was: from the destinations a reload replaces (prev), else from
// the store, as saved at the last shutdown.
func (d *Daemon) restoreLearned(ctx context.Context, prev, next map[string]uploader.Destination) {
	st, ok := d.store.(settingStore)
	for name, dest := range next {
		l, learns := dest.(uploader.StreamLearner)
		if !learns {
			continue
		}
		if old, was := prev[name].(uploader.StreamLearner); was && old.LearnedStreams() > 0 {
			l.SetLearnedStreams(old.LearnedStreams())
			continue
		}
		if !ok {
			continue
		}
		v, err := st.Setting(ctx, d.learnedKey(name))
		if err != nil || v == nil {
			continue // nothing learned yet, or unreadable: probe afresh
		}
		if n, err := strconv.Atoi(string(v)); err == nil && n > 0 {
			l.SetLearnedStreams(n)
			d.log.Debug("parts in flight start where the last run settled", "destination", name, "streams", n)
		}
	}
}

// saveLearned keeps each destination's learned level for the next start.
func (d *Daemon) saveLearned() {
	st, ok := d.store.(settingStore)
	rt := d.rt.Load()
	if !ok || rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for name, dest := range rt.dests {
		l, learns := dest.(uploader.StreamLearner)
		if !learns || l.LearnedStreams() <= 0 {
			continue
		}
		if err := st.SetSetting(ctx, d.learnedKey(name), []byte(strconv.Itoa(l.LearnedStreams()))); err != nil {
			d.log.Warn("cannot keep the learned parts-in-flight level for the next start", "destination", name, "err", err)
		}
	}
}
