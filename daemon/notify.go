package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/watchfolder/watchfolder/config"
	"github.com/watchfolder/watchfolder/state"
)

// Webhook delivery: each hook has its own bounded queue and sender, so a
// hook that is down delays only its own notifications and never a job.
const (
	notifyQueue      = 256 // per hook; when full the oldest is dropped
	notifyTries      = 5
	notifyMaxBackoff = time.Minute
	// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>".
	SignatureHeader = "X-Watchfolder-Signature"
)

// Notification is the JSON body POSTed to a [[notify]] url when a job
// ends. It never holds secrets (no checkpoints, no credentials).
type Notification struct {
	Event           string            `json:"event"` // done | failed
	Job             uint64            `json:"job"`
	Folder          string            `json:"folder"`
	Path            string            `json:"path"`       // where the file was found
	RelPath         string            `json:"relpath"`    // below the folder root
	FinalPath       string            `json:"final_path"` // where it is now (processed/ or failed/)
	Size            int64             `json:"size"`
	SHA256          string            `json:"sha256,omitempty"`
	Attempts        int               `json:"attempts"`
	Error           string            `json:"error,omitempty"`
	Destinations    []NotifyDest      `json:"destinations"`
	Media           json.RawMessage   `json:"media,omitempty"` // the media check's facts
	Timings         NotificationTimes `json:"timings"`
	DaemonVersion   string            `json:"daemon_version"`
	NotificationUTC time.Time         `json:"sent"`
}

// NotifyDest is one destination in a Notification.
type NotifyDest struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	State    string `json:"state"`
	VendorID string `json:"vendor_id,omitempty"`
	Object   string `json:"object,omitempty"`
	Error    string `json:"error,omitempty"`
}

// NotificationTimes are the job's times.
type NotificationTimes struct {
	Found           time.Time `json:"found"`
	Finished        time.Time `json:"finished"`
	DurationSeconds float64   `json:"duration_seconds"`
}

// Sign returns the signature header value for body.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

type notifier struct {
	ctx     context.Context
	version string
	hooks   []*hook
}

type hook struct {
	idx     int
	cfg     config.Notify
	host    string // for logs: the URL may carry a token, its host does not
	log     *slog.Logger
	m       *metrics
	client  *http.Client
	backoff time.Duration

	mu     sync.Mutex
	queue  [][]byte
	events []string // event of each queued body
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

func newNotifier(ctx context.Context, cfgs []config.Notify, log *slog.Logger, m *metrics, backoff time.Duration, version string) *notifier {
	if backoff <= 0 {
		backoff = time.Second
	}
	n := &notifier{ctx: ctx, version: version}
	for i, c := range cfgs {
		host := ""
		if u, err := url.Parse(c.URL); err == nil {
			host = u.Host
		}
		h := &hook{idx: i, cfg: c, host: host, log: log.With("hook", i, "host", host), m: m,
			client: &http.Client{}, backoff: backoff,
			wake: make(chan struct{}, 1), done: make(chan struct{})}
		n.hooks = append(n.hooks, h)
		go h.run(ctx)
	}
	return n
}

// send queues a notification of j's end to every hook that wants it.
func (n *notifier) send(j *state.Job) {
	if n == nil || len(n.hooks) == 0 {
		return
	}
	ev := "done"
	if j.State == state.Failed {
		ev = "failed"
	} else if j.State != state.Done {
		return
	}
	var body []byte
	for _, h := range n.hooks {
		if !slices.Contains(h.cfg.Events, ev) {
			continue
		}
		if body == nil {
			var err error
			if body, err = json.Marshal(newNotification(ev, j, n.version)); err != nil {
				h.log.Error("encode notification", "job", j.ID, "err", err)
				return
			}
		}
		h.enqueue(ev, body)
	}
}

func newNotification(ev string, j *state.Job, version string) Notification {
	n := Notification{Event: ev, Job: j.ID, Folder: j.Folder, Path: j.Path, RelPath: j.RelPath,
		FinalPath: j.FinalPath, Size: j.Size, SHA256: j.SHA256, Attempts: j.Attempts, Media: j.Media,
		Destinations: []NotifyDest{}, DaemonVersion: version, NotificationUTC: time.Now().UTC(),
		Timings: NotificationTimes{Found: j.Created.UTC(), Finished: j.Updated.UTC(),
			DurationSeconds: j.Updated.Sub(j.Created).Seconds()}}
	if ev == "failed" {
		n.Error = j.Error
	}
	for _, d := range j.Destinations {
		n.Destinations = append(n.Destinations, NotifyDest{Name: d.Name, Type: d.Type, State: string(d.State),
			VendorID: d.VendorID, Object: d.Object, Error: d.Error})
	}
	return n
}

// close lets each hook deliver what it has queued, then stop.
func (n *notifier) close() {
	if n == nil {
		return
	}
	for _, h := range n.hooks {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		h.signal()
	}
}

func (h *hook) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *hook) enqueue(ev string, body []byte) {
	h.mu.Lock()
	if len(h.queue) >= notifyQueue {
		h.queue, h.events = h.queue[1:], h.events[1:]
		h.m.notifyDropped.WithLabelValues(strconv.Itoa(h.idx)).Inc()
		h.log.Warn("webhook queue full: dropped the oldest notification", "queue", notifyQueue)
	}
	h.queue = append(h.queue, body)
	h.events = append(h.events, ev)
	h.mu.Unlock()
	h.signal()
}

func (h *hook) run(ctx context.Context) {
	defer close(h.done)
	for {
		h.mu.Lock()
		if len(h.queue) == 0 {
			closed := h.closed
			h.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
			}
			continue
		}
		body, ev := h.queue[0], h.events[0]
		h.queue, h.events = h.queue[1:], h.events[1:]
		h.mu.Unlock()
		h.deliver(ctx, ev, body)
		if ctx.Err() != nil {
			return
		}
	}
}

// deliver tries up to notifyTries times with exponential backoff.
func (h *hook) deliver(ctx context.Context, ev string, body []byte) {
	label := strconv.Itoa(h.idx)
	delay := h.backoff
	var last error
	for try := 1; try <= notifyTries; try++ {
		retry, err := h.post(ctx, ev, body)
		if err == nil {
			h.m.notifySent.WithLabelValues(label).Inc()
			return
		}
		last = err
		if !retry || try == notifyTries {
			break
		}
		h.log.Debug("webhook attempt failed; will retry", "try", try, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, notifyMaxBackoff)
	}
	h.m.notifyFailed.WithLabelValues(label).Inc()
	h.log.Error("webhook notification given up", "event", ev, "tries", notifyTries, "err", last)
}

// post sends one request; retry says whether another try may help.
func (h *hook) post(ctx context.Context, ev string, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "watchfolder")
	req.Header.Set("X-Watchfolder-Event", ev)
	if h.cfg.Secret.IsSet() {
		req.Header.Set(SignatureHeader, Sign(h.cfg.Secret.Value(), body))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token: keep the cause.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return true, fmt.Errorf("POST to %s: %w", h.host, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("POST to %s: %s", h.host, resp.Status)
	default:
		return false, fmt.Errorf("POST to %s: %s (not retried)", h.host, resp.Status)
	}
}
