package bluebillywig

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/watchfolder/watchfolder/uploader"
)

// memSession records every saved checkpoint.
type memSession struct {
	mu    sync.Mutex
	saves []uploader.Checkpoint
	bytes int64
}

func (s *memSession) Save(_ context.Context, cp *uploader.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
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
