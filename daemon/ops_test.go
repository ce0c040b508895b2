package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
)

func TestControlSocketPeerRule(t *testing.T) {
	const self, sockGID = 990, 990
	tests := []struct {
		name string
		p    peer
		want bool
	}{
		{"root", peer{uid: 0, gid: 0}, true},
		{"daemon's own user", peer{uid: self, gid: 5}, true},
		{"primary group", peer{uid: 1000, gid: sockGID}, true},
		{"supplementary group", peer{uid: 1000, gid: 1000, groups: []uint32{27, sockGID}}, true},
		{"other user", peer{uid: 1000, gid: 1000, groups: []uint32{27}}, false},
		{"groups unknown", peer{uid: 1000, gid: 1000}, false},
		{"credentials unreadable", peer{uid: 0, err: errors.New("no cred")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := allowed(tt.p, self, sockGID); got != tt.want {
				t.Errorf("allowed(%+v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestProcGroupsReadsOwnProcess(t *testing.T) {
	groups, err := procGroups(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	own, _ := os.Getgroups()
	if len(groups) != len(own) {
		t.Errorf("procGroups = %v, os.Getgroups = %v", groups, own)
	}
}

func TestProgressRateAndETA(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name     string
		samples  []sample // (offset via at, bytes)
		now      time.Duration
		wantRate float64
	}{
		{"no samples", nil, 0, 0},
		{"steady 1 MB/s", []sample{{t0, 0}, {t0.Add(time.Second), 1e6}, {t0.Add(2 * time.Second), 2e6}}, 2 * time.Second, 1e6},
		{"stalled decays", []sample{{t0, 0}, {t0.Add(time.Second), 1e6}}, 4 * time.Second, 0.25e6},
		{"samples closer than the interval are merged", []sample{{t0, 0}, {t0.Add(100 * time.Millisecond), 5e6}, {t0.Add(time.Second), 1e6}}, time.Second, 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProgress()
			for _, s := range tt.samples {
				p.set(s.bytes, s.at)
			}
			if got := p.rate(t0.Add(tt.now)); got != tt.wantRate {
				t.Errorf("rate = %v, want %v", got, tt.wantRate)
			}
		})
	}
	// The window slides: only the last progressSamples samples count.
	p := newProgress()
	for i := range 40 {
		n := int64(i) * 1000
		if i >= 30 {
			n = 29000 + int64(i-29)*4000 // speeds up at the end
		}
		p.set(n, t0.Add(time.Duration(i)*time.Second))
	}
	if r := p.rate(t0.Add(39 * time.Second)); r <= 1000 || r >= 4000 {
		t.Errorf("sliding window rate = %v, want between the old and the new speed", r)
	}
	if got := eta(10e6, 4e6, 1e6); got != 6*time.Second {
		t.Errorf("eta = %v, want 6s", got)
	}
	if got := eta(10, 10, 5); got != 0 {
		t.Errorf("eta of a finished transfer = %v", got)
	}
}

func TestPauseStatePersistsAndReleases(t *testing.T) {
	dir := t.TempDir()
	p, err := loadPauseState(dir)
	if err != nil {
		t.Fatal(err)
	}
	p.parked[7] = "news"
	p.parked[9] = "sport"
	if _, err := p.set("", true, nil); err != nil {
		t.Fatal(err)
	}
	// Resuming one folder of "all" keeps the others paused by name.
	release, err := p.set("news", false, []string{"news", "sport"})
	if err != nil {
		t.Fatal(err)
	}
	if len(release) != 1 || release[0] != 7 {
		t.Errorf("released %v, want [7]", release)
	}
	q, err := loadPauseState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if q.paused("news") || !q.paused("sport") || q.all {
		t.Errorf("reloaded state: all=%v folders=%v", q.all, q.folders)
	}
	os.WriteFile(filepath.Join(dir, pauseFile), []byte("{not json"), 0o600)
	if _, err := loadPauseState(dir); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed pause file: %v", err)
	}
}

func testHook(t *testing.T, url string, secret string) (*notifier, *metrics) {
	t.Helper()
	d := &Daemon{sched: newScheduler(), version: "test"}
	m := newMetrics(d)
	n := config.Notify{URL: url, Events: []string{"done", "failed"}, Timeout: time.Second}
	if secret != "" {
		n.Secret = config.NewSecret(secret)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return newNotifier(ctx, []config.Notify{n}, log, m, time.Millisecond, "test", nil, false), m
}

func TestWebhookSignedRetriedAndBounded(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls < 3 { // two failures, then success
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if r.Header.Get(SignatureHeader) != Sign("s3cret", b) {
			t.Errorf("bad signature %q", r.Header.Get(SignatureHeader))
		}
		bodies = append(bodies, b)
	}))
	defer srv.Close()
	n, _ := testHook(t, srv.URL, "s3cret")
	j := &state.Job{ID: 4, Folder: "news", Path: "/w/a.mp4", RelPath: "a.mp4", State: state.Failed, Error: "boom",
		Created: time.Now().Add(-time.Minute), Updated: time.Now(),
		Destinations: []state.Dest{{Name: "archive", Type: "s3", State: state.DestFailed, Error: "boom"}}}
	n.send(j)
	n.close()
	<-n.hooks[0].done
	if len(bodies) != 1 || calls != 3 {
		t.Fatalf("calls %d, bodies %d; want 3 tries and one delivery", calls, len(bodies))
	}
	var p Notification
	if err := json.Unmarshal(bodies[0], &p); err != nil {
		t.Fatal(err)
	}
	if p.Event != "failed" || p.Job != 4 || p.Error != "boom" || len(p.Destinations) != 1 || p.Timings.DurationSeconds < 59 {
		t.Errorf("payload %s", bodies[0])
	}
	if strings.Contains(string(bodies[0]), "s3cret") {
		t.Error("secret in the payload")
	}

	// A hook that never answers: the queue stays bounded, the oldest go.
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer slow.Close()
	defer close(block)
	n2, m2 := testHook(t, slow.URL, "")
	start := time.Now()
	for i := range notifyQueue + 10 {
		n2.send(&state.Job{ID: uint64(i), State: state.Done})
	}
	if time.Since(start) > time.Second {
		t.Errorf("send blocked for %s", time.Since(start))
	}
	h := n2.hooks[0]
	h.mu.Lock()
	queued := len(h.queue)
	h.mu.Unlock()
	if queued > notifyQueue {
		t.Errorf("queue holds %d, bound is %d", queued, notifyQueue)
	}
	var mt dto.Metric
	if err := m2.notifyDropped.WithLabelValues("0").Write(&mt); err != nil {
		t.Fatal(err)
	}
	if got := mt.GetCounter().GetValue(); got < 9 {
		t.Errorf("dropped counter = %v, want >= 9", got)
	}
}

// The watchdog pings only while the ingest loop answers its heartbeat.
func TestWatchdogNeedsTheIngestLoop(t *testing.T) {
	var mu sync.Mutex
	pings := 0
	d := &Daemon{heartbeat: make(chan chan struct{}), log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		opts: Options{WatchdogInterval: 5 * time.Millisecond, Watchdog: func() { mu.Lock(); pings++; mu.Unlock() }}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.watchdog(ctx)
	time.Sleep(100 * time.Millisecond) // twenty periods with a wedged loop
	mu.Lock()
	wedged := pings
	mu.Unlock()
	if wedged != 0 {
		t.Fatalf("%d pings while the loop did not answer", wedged)
	}
	go func() { // the loop comes back
		for {
			select {
			case ack := <-d.heartbeat:
				close(ack)
			case <-ctx.Done():
				return
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := pings
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pings once the loop answers, want >= 3", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
