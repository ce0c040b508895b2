package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/watchfolder/watchfolder/watcher"
)

// metrics are the Prometheus series (README "Metrics" lists them). They
// live in the daemon's own registry: the global one would be shared by
// every daemon in a test binary.
type metrics struct {
	d   *Daemon
	reg *prometheus.Registry

	bytes         *prometheus.CounterVec
	uploadSeconds *prometheus.HistogramVec
	jobSeconds    *prometheus.HistogramVec
	errors        *prometheus.CounterVec
	notifySent    *prometheus.CounterVec
	notifyFailed  *prometheus.CounterVec
	notifyDropped *prometheus.CounterVec

	// Counters of watchers a reload replaced, so the exported totals do
	// not fall back when a new watcher starts from zero.
	mu      sync.Mutex
	retired watcher.Stats
}

var (
	descJobs = prometheus.NewDesc("watchfolder_jobs",
		"Jobs by folder and state (from the state database at scrape time).", []string{"folder", "state"}, nil)
	descWatchedDirs = prometheus.NewDesc("watchfolder_watched_directories",
		"Directories with an inotify watch.", nil, nil)
	descScans = prometheus.NewDesc("watchfolder_rescans_total",
		"Full folder scans completed (start-up, periodic, overflow, reload).", nil, nil)
	descOverflows = prometheus.NewDesc("watchfolder_event_overflows_total",
		"Kernel event-queue overflows (each triggers a full rescan).", nil, nil)
	descProbeFallbacks = prometheus.NewDesc("watchfolder_probe_fallbacks_total",
		"Files found stable without a writer probe (lease not supported there).", nil, nil)
	descWatchErrors = prometheus.NewDesc("watchfolder_watch_errors_total",
		"Directories that could not be watched (e.g. inotify watch limit).", nil, nil)
)

func newMetrics(d *Daemon) *metrics {
	m := &metrics{d: d, reg: prometheus.NewRegistry()}
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "watchfolder_uploaded_bytes_total", Help: "Bytes uploaded, by destination.",
	}, []string{"destination"})
	m.uploadSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "watchfolder_upload_duration_seconds", Help: "Time to upload and register one file with one destination.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 12), // 0.1 s .. ~6 h
	}, []string{"destination"})
	m.jobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "watchfolder_job_duration_seconds", Help: "Time from a file being found to its job being done.",
		Buckets: prometheus.ExponentialBuckets(1, 2.5, 12), // 1 s .. ~16 h
	}, []string{"folder"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "watchfolder_errors_total", Help: "Failed delivery attempts by destination and kind (permanent, transient, source_changed, gone).",
	}, []string{"destination", "kind"})
	m.notifySent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "watchfolder_notify_sent_total", Help: "Webhook notifications delivered, by hook (index in the config).",
	}, []string{"hook"})
	m.notifyFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "watchfolder_notify_failed_total", Help: "Webhook notifications given up after all tries, by hook.",
	}, []string{"hook"})
	m.notifyDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "watchfolder_notify_dropped_total", Help: "Webhook notifications dropped because the hook's queue was full, by hook.",
	}, []string{"hook"})
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "watchfolder_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": d.version, "goversion": goVersion},
	})
	build.Set(1)
	if d.cl != nil {
		m.reg.MustRegister(d.cl.collectors()...)
	}
	m.reg.MustRegister(m.bytes, m.uploadSeconds, m.jobSeconds, m.errors,
		m.notifySent, m.notifyFailed, m.notifyDropped, build, stateCollector{m},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "watchfolder_queue_depth", Help: "Jobs waiting for a worker.",
		}, func() float64 { return float64(d.sched.depth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "watchfolder_jobs_in_flight", Help: "Jobs a worker is processing now.",
		}, func() float64 { return float64(d.inflight.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "watchfolder_start_time_seconds", Help: "When the daemon started (Unix time).",
		}, func() float64 { return float64(d.started.UnixNano()) / 1e9 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) uploaded(dest string, n int64) {
	if n > 0 {
		m.bytes.WithLabelValues(dest).Add(float64(n))
	}
}

func (m *metrics) destDone(dest string, d time.Duration) {
	m.uploadSeconds.WithLabelValues(dest).Observe(d.Seconds())
}

func (m *metrics) jobDone(folder string, d time.Duration) {
	m.jobSeconds.WithLabelValues(folder).Observe(d.Seconds())
}

func (m *metrics) failure(dest, kind string) { m.errors.WithLabelValues(dest, kind).Inc() }

func (m *metrics) retireWatcher(s watcher.Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retired.Scans += s.Scans
	m.retired.Overflows += s.Overflows
	m.retired.ProbeFallbacks += s.ProbeFallbacks
	m.retired.WatchErrors += s.WatchErrors
}

// stateCollector reads job counts and watcher counters at scrape time.
type stateCollector struct{ m *metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descWatchedDirs, descScans, descOverflows, descProbeFallbacks, descWatchErrors} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := c.m.d.store.Counts(ctx); err == nil {
		for folder, byState := range counts {
			for st, n := range byState {
				ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), folder, string(st))
			}
		}
	} else {
		ch <- prometheus.NewInvalidMetric(descJobs, err)
	}
	s := c.m.d.watcher.Load().Stats()
	c.m.mu.Lock()
	r := c.m.retired
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descWatchedDirs, prometheus.GaugeValue, float64(s.WatchedDirs))
	ch <- prometheus.MustNewConstMetric(descScans, prometheus.CounterValue, float64(s.Scans+r.Scans))
	ch <- prometheus.MustNewConstMetric(descOverflows, prometheus.CounterValue, float64(s.Overflows+r.Overflows))
	ch <- prometheus.MustNewConstMetric(descProbeFallbacks, prometheus.CounterValue, float64(s.ProbeFallbacks+r.ProbeFallbacks))
	ch <- prometheus.MustNewConstMetric(descWatchErrors, prometheus.CounterValue, float64(s.WatchErrors+r.WatchErrors))
}

type metricsServer struct{ srv *http.Server }

func (s *metricsServer) Close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// serve starts the /metrics endpoint; an empty listen address disables it.
func (m *metrics) serve(listen string) (*metricsServer, error) {
	if listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.d.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	m.d.log.Info("serving Prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return &metricsServer{srv: srv}, nil
}
