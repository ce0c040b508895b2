package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/daemon"
	"github.com/watchfolder/watchfolder/internal/testenv/etcdenv"
	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/storetest"
)

// migrate --to etcd copies every job (ids, history, checkpoints) into an
// empty prefix, refuses a second time, and --to bbolt copies it back.
func TestMigrateRoundTrip(t *testing.T) {
	ctx := context.Background()
	etcd := etcdenv.Start(t, 1)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.toml")
	write := func(stateDir string) {
		toml := fmt.Sprintf(`state_dir = %q
[state]
endpoints = [%q]
prefix = "/migrate"
[[folder]]
name = "news"
path = %q
destinations = ["a"]
[destination.a]
type = "s3"
bucket = "b-1"
`, stateDir, etcd.Endpoints[0], filepath.Join(dir, "in"))
		if err := os.WriteFile(cfgPath, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(dir, "src")
	write(src)
	db, err := state.Open(filepath.Join(src, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var jobs []*state.Job
	for i := range 150 { // more than one etcd transaction
		j := storetest.NewJob("news", fmt.Sprintf("c%03d.mp4", i), state.Queued)
		j.Destinations[0].Checkpoint = []byte(`{"upload_id":"u","parts":[{"n":1}]}`)
		jobs = append(jobs, j)
	}
	if err := db.CreateMany(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Update(ctx, jobs[3].ID, func(j *state.Job) error { j.State = state.Uploading; return nil }); err != nil {
		t.Fatal(err)
	}
	// Two webhooks still queued, and a paused folder: they move too.
	for _, ev := range []string{"done", "failed"} {
		if _, err := db.OutboxAdd(ctx, "hook-1", ev, []byte(`{"event":"`+ev+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	const pause = `{"all":false,"folders":["news"]}`
	if err := os.WriteFile(filepath.Join(src, "paused.json"), []byte(pause), 0o600); err != nil {
		t.Fatal(err)
	}
	want, _ := db.List(ctx, state.Filter{})
	db.Close()
	queued := func(o interface {
		Outbox(context.Context) ([]state.OutboxEntry, error)
	}) string {
		t.Helper()
		es, err := o.Outbox(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, e := range es {
			fmt.Fprintf(&b, "%s %s %s;", e.Hook, e.Event, e.Body)
		}
		return b.String()
	}
	const wantQueued = `hook-1 done {"event":"done"};hook-1 failed {"event":"failed"};`

	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		code := e.main(append([]string{"migrate", "--config", cfgPath}, args...))
		return out.String(), errb.String(), code
	}
	if out, errOut, code := run("--to", "etcd"); code != 0 || !strings.Contains(out, "copied 150 job(s)") {
		t.Fatalf("migrate --to etcd: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := run("--to", "etcd"); code == 0 || !strings.Contains(errOut, "already holds") {
		t.Errorf("second migrate into a full prefix: exit %d: %s", code, errOut)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	es, err := daemon.OpenEtcd(ctx, cfg.State)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	got, err := es.List(ctx, state.Filter{})
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("etcd holds %d jobs (%v), differing from state.db's %d", len(got), err, len(want))
	}
	if q := queued(es); q != wantQueued {
		t.Errorf("etcd outbox after migrate = %q, want %q", q, wantQueued)
	}
	if p, err := es.Setting(ctx, "pause"); err != nil || string(p) != pause {
		t.Errorf("etcd pause after migrate = %q (%v), want %s", p, err, pause)
	}
	next := storetest.NewJob("news", "new.mp4", state.Queued)
	if err := es.Create(ctx, next); err != nil || next.ID != 151 {
		t.Errorf("first id after the import = %d (%v), want 151", next.ID, err)
	}
	if err := es.Delete(ctx, next.ID); err != nil {
		t.Fatal(err)
	}

	write(filepath.Join(dir, "back"))
	if out, errOut, code := run("--to", "bbolt"); code != 0 {
		t.Fatalf("migrate --to bbolt: exit %d\n%s%s", code, out, errOut)
	}
	back, err := state.Open(filepath.Join(dir, "back", "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	got, err = back.List(ctx, state.Filter{})
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("state.db after the round trip holds %d jobs (%v), want %d", len(got), err, len(want))
	}
	if q := queued(back); q != wantQueued {
		t.Errorf("state.db outbox after the round trip = %q, want %q", q, wantQueued)
	}
	if p, err := os.ReadFile(filepath.Join(dir, "back", "paused.json")); err != nil || string(p) != pause {
		t.Errorf("paused.json after the round trip = %q (%v), want %s", p, err, pause)
	}
	if problems, err := back.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check after import: %v %v", problems, err)
	}
}
