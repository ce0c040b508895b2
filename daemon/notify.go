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

// outbox keeps queued notifications in the state database until they are
// sent or given up, so a shutdown or a crash does not lose them (*state.Store).
type outbox interface {
	OutboxAdd(ctx context.Context, hook, event string, body []byte) (uint64, error)
	OutboxDelete(ctx context.Context, id uint64) error
	Outbox(ctx context.Context) ([]state.OutboxEntry, error)
}

// hookKey identifies a hook in the outbox across restarts. It is a hash:
// a URL may carry a token, which must not be written to the database.
func hookKey(c config.Notify) string {
	sum := sha256.Sum256([]byte(c.URL))
	return hex.EncodeToString(sum[:8])
}

type hook struct {
	idx     int
	cfg     config.Notify
	host    string // for logs: the URL may carry a token, its host does not
	log     *slog.Logger
	m       *metrics
	client  *http.Client
	backoff time.Duration

	store outbox // nil: memory only
	key   string // hookKey

	mu     sync.Mutex
	queue  []queued
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

// queued is one notification waiting in a hook's queue; id is its outbox
// entry (0: not stored).
type queued struct {
	id    uint64
	event string
	body  []byte
}

// newNotifier starts a sender per hook. With a store, notifications are
// kept in its outbox until sent; resume (at start-up, not on a reload,
// where the previous notifier still sends its own) queues what a previous
// run left there first.
func newNotifier(ctx context.Context, cfgs []config.Notify, log *slog.Logger, m *metrics, backoff time.Duration, version string, store outbox, resume bool) *notifier {
	if backoff <= 0 {
		backoff = time.Second
	}
	n := &notifier{ctx: ctx, version: version}
	byKey := map[string]*hook{}
	for i, c := range cfgs {
		host := ""
		if u, err := url.Parse(c.URL); err == nil {
			host = u.Host
		}
		h := &hook{idx: i, cfg: c, host: host, log: log.With("hook", i, "host", host), m: m,
			client: &http.Client{}, backoff: backoff, store: store, key: hookKey(c),
			wake: make(chan struct{}, 1), done: make(chan struct{})}
		n.hooks = append(n.hooks, h)
		byKey[h.key] = h
	}
	if store != nil && resume {
		n.resume(ctx, store, byKey, log)
	}
	for _, h := range n.hooks {
		go h.run(ctx)
	}
	return n
}

// resume queues the notifications a previous run could not send.
func (n *notifier) resume(ctx context.Context, store outbox, byKey map[string]*hook, log *slog.Logger) {
	entries, err := store.Outbox(ctx)
	if err != nil {
		log.Error("read unsent notifications", "err", err)
		return
	}
	resumed, dropped := 0, 0
	for _, e := range entries {
		h := byKey[e.Hook]
		if h == nil {
			// The hook is no longer configured: nobody to send it to.
			dropped++
			if err := store.OutboxDelete(ctx, e.ID); err != nil {
				log.Warn("remove notification for a removed hook", "err", err)
			}
			continue
		}
		h.push(queued{id: e.ID, event: e.Event, body: e.Body})
		resumed++
	}
	if resumed > 0 || dropped > 0 {
		log.Info("notifications left by the previous run", "resent", resumed, "dropped_removed_hook", dropped)
	}
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

// enqueue stores a notification in the outbox (when there is one) and
// queues it for sending.
func (h *hook) enqueue(ev string, body []byte) {
	q := queued{event: ev, body: body}
	if h.store != nil {
		id, err := h.store.OutboxAdd(context.WithoutCancel(context.Background()), h.key, ev, body)
		if err != nil {
			h.log.Warn("cannot keep notification in the database; it is lost if the daemon stops before it is sent", "err", err)
		}
		q.id = id
	}
	h.push(q)
}

func (h *hook) push(q queued) {
	h.mu.Lock()
	var drop queued
	full := len(h.queue) >= notifyQueue
	if full {
		drop = h.queue[0]
		h.queue = h.queue[1:]
	}
	h.queue = append(h.queue, q)
	h.mu.Unlock()
	if full {
		h.m.notifyDropped.WithLabelValues(strconv.Itoa(h.idx)).Inc()
		h.log.Warn("webhook queue full: dropped the oldest notification", "queue", notifyQueue)
		h.forget(drop.id)
	}
	h.signal()
}

// forget removes a notification from the outbox once it is sent, given up
// or dropped.
func (h *hook) forget(id uint64) {
	if h.store == nil || id == 0 {
		return
	}
	if err := h.store.OutboxDelete(context.Background(), id); err != nil {
		h.log.Warn("remove sent notification from the database; it may be sent again after a restart", "err", err)
	}
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
		q := h.queue[0]
		h.queue = h.queue[1:]
		h.mu.Unlock()
		if h.deliver(ctx, q.event, q.body) {
			h.forget(q.id)
		}
		if ctx.Err() != nil {
			return // what is still queued stays in the outbox
		}
	}
}

// deliver tries up to notifyTries times with exponential backoff. It
// reports whether the notification is finished with (sent or given up);
// false when ctx ended first.
func (h *hook) deliver(ctx context.Context, ev string, body []byte) bool {
	label := strconv.Itoa(h.idx)
	delay := h.backoff
	var last error
	for try := 1; try <= notifyTries; try++ {
		retry, err := h.post(ctx, ev, body)
		if err == nil {
			h.m.notifySent.WithLabelValues(label).Inc()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		last = err
		if !retry || try == notifyTries {
			break
		}
		h.log.Debug("webhook attempt failed; will retry", "try", try, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, notifyMaxBackoff)
	}
	h.m.notifyFailed.WithLabelValues(label).Inc()
	h.log.Error("webhook notification given up", "event", ev, "tries", notifyTries, "err", last)
	return true
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
