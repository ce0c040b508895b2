package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The outbox bucket keeps notifications (webhook bodies) until they are
// delivered, so those still queued at a shutdown or a crash are sent after
// the restart. It is created on the first read-write open; a database
// written before it existed simply has an empty outbox.
//
//	outbox  8-byte big-endian sequence -> JSON OutboxEntry
const bucketOutbox = "outbox"

// OutboxEntry is one notification waiting to be sent.
type OutboxEntry struct {
	ID      uint64    `json:"-"`
	Hook    string    `json:"hook"`  // which receiver (a stable key the caller chooses)
	Event   string    `json:"event"` // e.g. done | failed
	Body    []byte    `json:"body"`
	Created time.Time `json:"created"`
}

// OutboxAdd stores a notification and returns its id.
func (s *Store) OutboxAdd(ctx context.Context, hook, event string, body []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("queue notification: %w", err)
	}
	e := OutboxEntry{Hook: hook, Event: event, Body: body, Created: s.now()}
	data, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("queue notification: %w", err)
	}
	var id uint64
	err = s.batch(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucketOutbox))
		if err != nil {
			return err
		}
		if id, err = b.NextSequence(); err != nil {
			return err
		}
		return b.Put(binary.BigEndian.AppendUint64(nil, id), data)
	})
	if err != nil {
		return 0, fmt.Errorf("queue notification: %w", err)
	}
	return id, nil
}

// OutboxDelete removes a sent (or given-up) notification. A missing id is
// not an error.
func (s *Store) OutboxDelete(ctx context.Context, id uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove notification %d: %w", id, err)
	}
	err := s.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketOutbox))
		if b == nil {
			return nil
		}
		return b.Delete(binary.BigEndian.AppendUint64(nil, id))
	})
	if err != nil {
		return fmt.Errorf("remove notification %d: %w", id, err)
	}
	return nil
}

// Outbox returns the stored notifications, oldest first.
func (s *Store) Outbox(ctx context.Context) ([]OutboxEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read notification outbox: %w", err)
	}
	var out []OutboxEntry
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketOutbox))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 || v == nil {
				return fmt.Errorf("outbox: malformed key %x: %w", k, ErrCorrupt)
			}
			var e OutboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("outbox entry %x: %v: %w", k, err, ErrCorrupt)
			}
			e.ID = binary.BigEndian.Uint64(k)
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read notification outbox: %w", err)
	}
	return out, nil
}
