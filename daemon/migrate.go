package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/watchfolder/watchfolder/mover"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/etcdstore"
)

// Migrated is what MigrateExtras carried over.
type Migrated struct {
	Notifications int  // webhook bodies still waiting to be sent
	Pause         bool // a pause was in force and now is in the new place
}

// MigrateExtras copies what a state holds besides its jobs, for
// `watchfolder migrate`: the notifications still queued in the outbox
// (they are sent by whichever daemon runs next) and the pause, which
// single-node mode keeps in state_dir/paused.json and cluster mode in
// etcd (the same JSON). toEtcd copies from db and stateDir into es; false
// copies back. Run it after the jobs were imported, daemons stopped.
func MigrateExtras(ctx context.Context, stateDir string, db *state.Store, es *etcdstore.Store, toEtcd bool) (Migrated, error) {
	var m Migrated
	var from, into outbox = db, es
	if !toEtcd {
		from, into = es, db
	}
	queued, err := from.Outbox(ctx)
	if err != nil {
		return m, fmt.Errorf("read queued notifications: %w", err)
	}
	for _, e := range queued {
		if _, err := into.OutboxAdd(ctx, e.Hook, e.Event, e.Body); err != nil {
			return m, fmt.Errorf("copy queued notification %d (%s): %w", e.ID, e.Event, err)
		}
		m.Notifications++
	}

	file := filepath.Join(stateDir, pauseFile)
	var data []byte
	if toEtcd {
		data, err = os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			return m, nil
		}
	} else {
		data, err = es.Setting(ctx, pauseSetting)
	}
	if err != nil {
		return m, fmt.Errorf("read pause state: %w", err)
	}
	if data == nil {
		return m, nil
	}
	var doc pauseDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return m, fmt.Errorf("pause state is malformed (fix or remove it): %w", err)
	}
	if !doc.All && len(doc.Folders) == 0 {
		return m, nil
	}
	if toEtcd {
		err = es.SetSetting(ctx, pauseSetting, data)
	} else {
		err = mover.WriteFileAtomic(file, data, 0o600)
	}
	if err != nil {
		return m, fmt.Errorf("write pause state: %w", err)
	}
	m.Pause = true
	return m, nil
}
