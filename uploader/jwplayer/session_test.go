package jwplayer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/watchfolder/watchfolder/uploader"
)

// memSession records saved checkpoints; failSaves > 0 fails that many
// saves first (a crash before the commit).
type memSession struct {
	mu        sync.Mutex
	saves     []uploader.Checkpoint
	failSaves int
	bytes     int64
}

func (s *memSession) Save(_ context.Context, cp *uploader.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failSaves > 0 {
		s.failSaves--
		return fmt.Errorf("simulated crash")
	}
	s.saves = append(s.saves, cloneCP(cp))
	return nil
}

func (s *memSession) Progress(n int64) {
	s.mu.Lock()
	s.bytes = n
	s.mu.Unlock()
}

func (s *memSession) last() uploader.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.saves) == 0 {
		return uploader.Checkpoint{}
	}
	return cloneCP(&s.saves[len(s.saves)-1])
}

func cloneCP(cp *uploader.Checkpoint) uploader.Checkpoint {
	b, _ := json.Marshal(cp)
	var out uploader.Checkpoint
	json.Unmarshal(b, &out)
	return out
}

// stopAfterSession saves the first `after` checkpoints, then fails every
// save: the process stopping right after a step was committed.
type stopAfterSession struct {
	*memSession
	after int
	n     int
}

func (s *stopAfterSession) Save(ctx context.Context, cp *uploader.Checkpoint) error {
	s.n++
	if s.n > s.after {
		return fmt.Errorf("simulated stop")
	}
	return s.memSession.Save(ctx, cp)
}
