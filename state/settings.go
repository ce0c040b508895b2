package state

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Settings are small named values kept beside the jobs (what the daemon
// learned about a destination's link, for one), in the meta bucket under
// "setting/"; etcdstore keeps the same under P/settings/.
const settingPrefix = "setting/"

// Setting returns the value stored under name, or nil.
func (s *Store) Setting(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read setting %s: %w", name, err)
	}
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(bucketMeta)).Get([]byte(settingPrefix + name)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read setting %s: %w", name, err)
	}
	return out, nil
}

// SetSetting stores value under name.
func (s *Store) SetSetting(ctx context.Context, name string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write setting %s: %w", name, err)
	}
	err := s.batch(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(settingPrefix+name), value)
	})
	if err != nil {
		return fmt.Errorf("write setting %s: %w", name, err)
	}
	return nil
}
