package etcdstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/etcdstore"
	"github.com/watchfolder/watchfolder/state/storetest"
)

// BenchmarkBurst is the state side of a burst of 2,000 new files on each
// backend: the jobs created in ingest batches of 512, then every job taken
// through queued -> uploading -> registering -> moving -> done by 8
// workers, as the daemon does. One op is the whole burst; transitions/s is
// reported. etcd runs as a 3-member cluster on loopback (fsync on), so
// the figure is the cost of the distributed store without the network.
func BenchmarkBurst(b *testing.B) {
	const files, batch, workers = 2000, 512, 8
	e := etcdenv.Start(b, 3)
	backends := []struct {
		name string
		open func(b *testing.B, i int) storetest.Store
	}{
		{"bbolt", func(b *testing.B, i int) storetest.Store {
			s, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"etcd", func(b *testing.B, i int) storetest.Store {
			s, err := etcdstore.Open(context.Background(), clientv3.Config{Endpoints: e.Endpoints},
				etcdstore.Options{Prefix: fmt.Sprintf("/bench%d", i), Node: "n"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
	ctx := context.Background()
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				s := be.open(b, i)
				jobs := make([]*state.Job, files)
				for k := range jobs {
					jobs[k] = storetest.NewJob("burst", fmt.Sprintf("f%05d.mp4", k), state.Queued)
				}
				for k := 0; k < files; k += batch {
					if err := s.CreateMany(ctx, jobs[k:min(k+batch, files)]); err != nil {
						b.Fatal(err)
					}
				}
				ids := make(chan uint64, files)
				for _, j := range jobs {
					ids <- j.ID
				}
				close(ids)
				var wg sync.WaitGroup
				for range workers {
					wg.Go(func() {
						for id := range ids {
							for _, st := range []state.State{state.Uploading, state.Registering, state.Moving, state.Done} {
								if _, err := s.Update(ctx, id, func(j *state.Job) error { j.State = st; return nil }); err != nil {
									b.Error(err)
									return
								}
							}
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(files*5*b.N)/b.Elapsed().Seconds(), "transitions/s")
		})
	}
}
