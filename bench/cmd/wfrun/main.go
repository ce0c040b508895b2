// Command wfrun measures the watchfolder daemon in the benchmark scenarios,
// and generates the test files.
//
//	wfrun gen -path FILE -size BYTES              one file of random bytes
//	wfrun gen -path DIR -files N -size BYTES      N files in a new directory
//	wfrun file|burst|resume [flags]               one measured run
//	wfrun annotate -results F -extra k=v,...      add figures to the last run
//
// A run starts a fresh daemon (fresh state, watched folder and control
// socket, so its peak RSS is this run's), renames the staged file (or
// directory) into the watched folder and stops the clock when every file is
// in processed/ and the daemon reports its job done. CPU time is the
// daemon's utime+stime from /proc/<pid>/stat over that interval, peak RSS
// its VmHWM. Afterwards the files are moved back to the stage, so every run
// (and every tool) uploads the same inodes from a warm page cache.
//
// resume puts a byte-counting TCP proxy in front of the store, SIGKILLs the
// daemon once half the file went through it, restarts it and records how
// many bytes crossed the proxy in total: what exceeds the file size was
// sent twice.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/watchfolder/watchfolder/bench/internal/result"
)

const folderName = "bench"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wfrun gen|file|burst|resume [flags]")
		os.Exit(2)
	}
	var err error
	switch mode := os.Args[1]; mode {
	case "gen":
		err = gen(os.Args[2:])
	case "freeport":
		err = freePort()
	case "waitlive":
		err = waitLive(os.Args[2:])
	case "file", "burst", "resume":
		err = measure(mode, os.Args[2:])
	case "annotate":
		err = annotate(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wfrun:", err)
		os.Exit(1)
	}
}

// freePort prints a loopback port that was free just now.
func freePort() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

// annotate adds figures measured around the last run (the store's and the
// link's CPU) to its record: -extra key=value,key=value.
func annotate(args []string) error {
	fs := flag.NewFlagSet("annotate", flag.ExitOnError)
	results := fs.String("results", "", "results file (JSON lines)")
	extra := fs.String("extra", "", "key=value,... to add")
	fs.Parse(args)
	m := map[string]float64{}
	for kv := range strings.SplitSeq(*extra, ",") {
		k, v, ok := strings.Cut(kv, "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || k == "" || err != nil {
			return fmt.Errorf("annotate: bad -extra item %q (want key=number)", kv)
		}
		m[k] = f
	}
	return result.AnnotateLast(*results, m)
}

// waitLive waits until MinIO answers its liveness probe.
func waitLive(args []string) error {
	fs := flag.NewFlagSet("waitlive", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "http://127.0.0.1:PORT")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(*endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not live after %s: %w", *endpoint, *timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	path := fs.String("path", "", "file (or directory with -files) to create")
	files := fs.Int("files", 0, "create a directory of this many files")
	size := fs.Int64("size", 0, "bytes per file")
	fs.Parse(args)
	if *path == "" || *size <= 0 {
		return errors.New("gen: -path and -size are required")
	}
	rng := rand.NewChaCha8([32]byte{'w', 'f'})
	write := func(p string) error {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if _, err := io.CopyN(f, rng, *size); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		return f.Close()
	}
	if *files == 0 {
		return write(*path)
	}
	if err := os.MkdirAll(*path, 0o755); err != nil {
		return err
	}
	for i := range *files {
		if err := write(filepath.Join(*path, fmt.Sprintf("clip-%05d.mp4", i))); err != nil {
			return err
		}
	}
	return nil
}

type opts struct {
	bin, endpoint, access, secret, bucket string
	work, stage, out                      string
	run                                   int
	timeout                               time.Duration
	killAt                                float64
	partSize                              string
	concurrency, maxFiles                 int
	tool, scenario                        string
	receipts                              bool
}

func measure(mode string, args []string) error {
	var o opts
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	fs.StringVar(&o.bin, "bin", "./watchfolder", "watchfolder binary")
	fs.StringVar(&o.endpoint, "endpoint", "", "S3 endpoint URL (http://127.0.0.1:PORT)")
	fs.StringVar(&o.access, "access-key", "", "S3 access key")
	fs.StringVar(&o.secret, "secret-key", "", "S3 secret key")
	fs.StringVar(&o.bucket, "bucket", "", "bucket (must exist)")
	fs.StringVar(&o.work, "work", "", "fresh work directory for this run (state, watched folder)")
	fs.StringVar(&o.stage, "stage", "", "staged file (file, resume) or directory of files (burst), same filesystem as -work")
	fs.StringVar(&o.out, "out", "", "append the result to this JSON-lines file")
	fs.IntVar(&o.run, "run", 1, "run number")
	fs.StringVar(&o.tool, "tool", "watchfolder", "tool name to record (e.g. a variant's)")
	fs.StringVar(&o.scenario, "scenario", "", "scenario name to record (default: the mode's, e.g. 1gib)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.Float64Var(&o.killAt, "kill-at", 0.5, "resume: SIGKILL after this fraction of the file crossed the proxy")
	fs.StringVar(&o.partSize, "part-size", "", `[upload] part_size, e.g. "8MiB" (default: the daemon's)`)
	fs.IntVar(&o.concurrency, "concurrency", 0, "[upload] concurrency (default: the daemon's)")
	fs.IntVar(&o.maxFiles, "max-files", 0, "[upload] max_files (default: the daemon's)")
	fs.BoolVar(&o.receipts, "receipts", false, "folder receipts = true (a <name>.receipt.json per file)")
	fs.Parse(args)
	if o.endpoint == "" || o.bucket == "" || o.work == "" || o.stage == "" {
		return errors.New("-endpoint, -bucket, -work and -stage are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var (
		rec result.Record
		err error
	)
	switch mode {
	case "file":
		rec, err = runDrop(ctx, o, false)
		rec.Scenario = "1gib"
	case "burst":
		rec, err = runDrop(ctx, o, true)
		rec.Scenario = "burst"
	case "resume":
		rec, err = runResume(ctx, o)
		rec.Scenario = "resume"
	}
	if err != nil {
		rescue(o)
		return fmt.Errorf("%s run %d: %w (daemon log in %s)", mode, o.run, err, o.work)
	}
	if o.scenario != "" {
		rec.Scenario = o.scenario
	}
	rec.Tool, rec.Run = o.tool, o.run
	fmt.Println(rec.Line())
	if o.out != "" {
		return result.Append(o.out, rec)
	}
	return nil
}

// layout is one run's directories.
type layout struct {
	watch, processed, failed, config, socket string
}

func setup(o opts, endpoint string) (layout, error) {
	l := layout{
		watch:  filepath.Join(o.work, "watch"),
		config: filepath.Join(o.work, "config.toml"),
		socket: filepath.Join(o.work, "control.sock"),
	}
	l.processed, l.failed = filepath.Join(l.watch, "processed"), filepath.Join(l.watch, "failed")
	for _, d := range []string{filepath.Join(o.work, "state"), l.watch} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return l, err
		}
	}
	cfg := fmt.Sprintf(`# written by bench/cmd/wfrun: engine defaults unless [upload] follows
state_dir = %q
control_socket = %q

[log]
level = %q

[[folder]]
name = %q
path = %q
destinations = ["store"]
stable_after = "0s"
rescan_interval = "1m"
receipts = %t
probe = "off"

[destination.store]
type = "s3"
bucket = %q
key = "{relpath}"
endpoint = %q
path_style = true
access_key_id = %q
secret_access_key = %q
`, filepath.Join(o.work, "state"), l.socket, logLevel(), folderName, l.watch, o.receipts, o.bucket, endpoint, o.access, o.secret)
	if o.partSize != "" || o.concurrency > 0 || o.maxFiles > 0 {
		cfg += "\n[upload]\n"
		if o.partSize != "" {
			cfg += fmt.Sprintf("part_size = %q\n", o.partSize)
		}
		if o.concurrency > 0 {
			cfg += fmt.Sprintf("concurrency = %d\n", o.concurrency)
		}
		if o.maxFiles > 0 {
			cfg += fmt.Sprintf("max_files = %d\n", o.maxFiles)
		}
	}
	return l, os.WriteFile(l.config, []byte(cfg), 0o600)
}

// daemon is one running watchfolder process.
type daemon struct {
	cmd  *exec.Cmd
	done chan error
	http *http.Client
}

func startDaemon(ctx context.Context, o opts, l layout, logName string) (*daemon, error) {
	logf, err := os.Create(filepath.Join(o.work, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.bin, "run", "--config", l.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	d := &daemon{cmd: cmd, done: make(chan error, 1), http: &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", l.socket)
		}},
		Timeout: 10 * time.Second,
	}}
	go func() { d.done <- cmd.Wait(); logf.Close() }()
	// Ready when the control socket answers.
	for {
		if _, err := d.status(ctx); err == nil {
			return d, nil
		}
		select {
		case err := <-d.done:
			return nil, fmt.Errorf("daemon exited during start-up: %v", err)
		case <-ctx.Done():
			d.kill()
			return nil, fmt.Errorf("daemon not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type status struct {
	Counts   map[string]map[string]int `json:"counts"`
	InFlight []struct {
		BytesDone int64 `json:"bytes_done"`
	} `json:"in_flight"`
}

func (d *daemon) status(ctx context.Context) (*status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wf/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: HTTP %d", resp.StatusCode)
	}
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &st, nil
}

// stop ends the daemon with SIGTERM (SIGKILL after 30 s).
func (d *daemon) stop() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		return err
	case <-time.After(30 * time.Second):
		d.kill()
		return errors.New("daemon did not stop within 30s of SIGTERM")
	}
}

func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// cpu returns the process's user and system CPU time (all threads).
func (d *daemon) cpu() (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces) in parens;
	// utime and stime are fields 14 and 15, in clock ticks (USER_HZ=100).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc/pid/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("parse /proc/pid/stat: %w", err)
	}
	return time.Duration(ut) * 10 * time.Millisecond, time.Duration(st) * 10 * time.Millisecond, nil
}

// hwm returns the process's peak RSS in MiB.
func (d *daemon) hwm() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return float64(kb) / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/pid/status")
}

// staged lists the files to deliver, as paths relative to the watched
// folder once the stage is renamed in.
func staged(o opts, burst bool) (names []string, err error) {
	if !burst {
		return []string{filepath.Base(o.stage)}, nil
	}
	ents, err := os.ReadDir(o.stage)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		names = append(names, filepath.Join(filepath.Base(o.stage), e.Name()))
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s is empty", o.stage)
	}
	return names, nil
}

// waitDone polls processed/ until every file is there, then the control
// socket until the daemon counts them all done.
func waitDone(ctx context.Context, d *daemon, l layout, names []string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	wait := func() error {
		select {
		case err := <-d.done:
			return fmt.Errorf("daemon exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			return nil
		}
	}
	dir := filepath.Dir(filepath.Join(l.processed, names[0]))
	for {
		if n := countMedia(dir); n >= len(names) {
			break
		}
		if ents, _ := os.ReadDir(l.failed); len(ents) > 0 {
			return fmt.Errorf("files ended in %s", l.failed)
		}
		if err := wait(); err != nil {
			return err
		}
	}
	for {
		st, err := d.status(ctx)
		if err == nil && st.Counts[folderName]["done"] >= len(names) {
			return nil
		}
		if err := wait(); err != nil {
			return err
		}
	}
}

func countMedia(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mp4") {
			n++
		}
	}
	return n
}

// restore moves the delivered files back to the stage.
func restore(o opts, l layout, names []string, burst bool) error {
	if !burst {
		return os.Rename(filepath.Join(l.processed, names[0]), o.stage)
	}
	if err := os.MkdirAll(o.stage, 0o755); err != nil {
		return err
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(l.processed, n), filepath.Join(o.stage, filepath.Base(n))); err != nil {
			return fmt.Errorf("restore stage: %w", err)
		}
	}
	return nil
}

func runDrop(ctx context.Context, o opts, burst bool) (result.Record, error) {
	var rec result.Record
	names, err := staged(o, burst)
	if err != nil {
		return rec, err
	}
	l, err := setup(o, o.endpoint)
	if err != nil {
		return rec, err
	}
	d, err := startDaemon(ctx, o, l, "daemon.log")
	if err != nil {
		return rec, err
	}
	u0, s0, err := d.cpu()
	if err != nil {
		d.kill()
		return rec, err
	}
	start := time.Now()
	if err := os.Rename(o.stage, filepath.Join(l.watch, filepath.Base(o.stage))); err != nil {
		d.kill()
		return rec, fmt.Errorf("drop: %w", err)
	}
	if err := waitDone(ctx, d, l, names); err != nil {
		d.kill()
		return rec, err
	}
	rec.WallS = time.Since(start).Seconds()
	u1, s1, err := d.cpu()
	if err != nil {
		d.kill()
		return rec, err
	}
	rec.UserS, rec.SysS = (u1 - u0).Seconds(), (s1 - s0).Seconds()
	if rec.RSSMiB, err = d.hwm(); err != nil {
		d.kill()
		return rec, err
	}
	if err := d.stop(); err != nil {
		return rec, fmt.Errorf("stop daemon: %w", err)
	}
	return rec, restore(o, l, names, burst)
}

// rescue puts the staged file or directory back after a failed run, so the
// next run (or tool) still finds it.
func rescue(o opts) {
	if _, err := os.Stat(o.stage); err == nil {
		return
	}
	name := filepath.Base(o.stage)
	watch := filepath.Join(o.work, "watch")
	for _, p := range []string{filepath.Join(watch, name), filepath.Join(watch, "processed", name), filepath.Join(watch, "failed", name)} {
		if os.Rename(p, o.stage) == nil {
			return
		}
	}
	fmt.Fprintf(os.Stderr, "wfrun: could not put %s back\n", o.stage)
}

// proxy forwards TCP connections to upstream and counts the bytes clients
// send (requests: headers and bodies), and apart the bodies of PUT
// requests: the media (UploadPart, PutObject), without the protocol.
type proxy struct {
	ln       net.Listener
	upstream string
	sent     atomic.Int64
	media    atomic.Int64
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

func startProxy(upstream string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	go p.serve()
	return p, nil
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *proxy) handle(c net.Conn) {
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		c.Close()
		return
	}
	p.track(c, true)
	defer p.track(c, false)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 256<<10)
		var m reqMeter
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.sent.Add(int64(n))
				p.media.Add(m.feed(buf[:n]))
				if _, werr := up.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		up.(*net.TCPConn).CloseWrite()
	})
	io.Copy(c, up)
	c.Close()
	up.Close()
	wg.Wait()
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func runResume(ctx context.Context, o opts) (result.Record, error) {
	var rec result.Record
	fi, err := os.Stat(o.stage)
	if err != nil {
		return rec, err
	}
	size := fi.Size()
	names := []string{filepath.Base(o.stage)}
	upstream := strings.TrimPrefix(o.endpoint, "http://")
	px, err := startProxy(upstream)
	if err != nil {
		return rec, err
	}
	defer px.close()
	l, err := setup(o, "http://"+px.ln.Addr().String())
	if err != nil {
		return rec, err
	}
	d, err := startDaemon(ctx, o, l, "daemon-1.log")
	if err != nil {
		return rec, err
	}
	base, mediaBase := px.sent.Load(), px.media.Load() // nothing yet, but be exact
	start := time.Now()
	if err := os.Rename(o.stage, filepath.Join(l.watch, names[0])); err != nil {
		d.kill()
		return rec, fmt.Errorf("drop: %w", err)
	}
	target := base + int64(o.killAt*float64(size))
	for px.sent.Load() < target {
		select {
		case err := <-d.done:
			return rec, fmt.Errorf("daemon exited before the kill: %v", err)
		case <-ctx.Done():
			d.kill()
			return rec, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	d.kill()
	killedAt := time.Since(start)
	before := px.sent.Load() - base
	committed, err := committedBytes(o, l)
	if err != nil {
		return rec, err
	}
	restart := time.Now()
	d, err = startDaemon(ctx, o, l, "daemon-2.log")
	if err != nil {
		return rec, fmt.Errorf("restart: %w", err)
	}
	u0, s0, err := d.cpu()
	if err != nil {
		d.kill()
		return rec, err
	}
	if err := waitDone(ctx, d, l, names); err != nil {
		d.kill()
		return rec, err
	}
	rec.WallS = time.Since(restart).Seconds()
	u1, s1, err := d.cpu()
	if err != nil {
		d.kill()
		return rec, err
	}
	rec.UserS, rec.SysS = (u1 - u0).Seconds(), (s1 - s0).Seconds()
	if rec.RSSMiB, err = d.hwm(); err != nil {
		d.kill()
		return rec, err
	}
	if err := d.stop(); err != nil {
		return rec, fmt.Errorf("stop daemon: %w", err)
	}
	total := px.sent.Load() - base
	media := px.media.Load() - mediaBase
	rec.Extra = map[string]float64{
		"media_sent":         float64(media),
		"resent_media":       float64(media - size),
		"file_bytes":         float64(size),
		"sent_before_kill":   float64(before),
		"sent_after_restart": float64(total - before),
		"total_sent":         float64(total),
		"resent":             float64(total - size),
		"killed_after_ms":    float64(killedAt.Milliseconds()),
		"committed_at_kill":  float64(committed),
	}
	return rec, restore(o, l, names, false)
}

// committedBytes reads (offline, with the daemon stopped) how many bytes of
// the job's multipart upload were committed as parts.
func committedBytes(o opts, l layout) (int64, error) {
	out, err := exec.Command(o.bin, "show", "--config", l.config, "--json", "1").Output()
	if err != nil {
		return 0, fmt.Errorf("watchfolder show: %w", err)
	}
	var job struct {
		Destinations []struct {
			Checkpoint json.RawMessage `json:"checkpoint"`
		} `json:"destinations"`
	}
	if err := json.Unmarshal(out, &job); err != nil {
		return 0, fmt.Errorf("decode watchfolder show: %w", err)
	}
	var n int64
	for _, d := range job.Destinations {
		// show summarises the parts (a count) or lists them, depending
		// on the version: take what is there.
		var cp struct {
			Parts    json.RawMessage `json:"parts"`
			PartSize int64           `json:"part_size"`
		}
		if err := json.Unmarshal(d.Checkpoint, &cp); err != nil {
			return 0, fmt.Errorf("decode checkpoint: %w", err)
		}
		var list []struct {
			Size int64 `json:"size"`
		}
		var count int64
		switch {
		case len(cp.Parts) == 0:
		case json.Unmarshal(cp.Parts, &list) == nil:
			for _, p := range list {
				n += p.Size
			}
		case json.Unmarshal(cp.Parts, &count) == nil:
			n += count * cp.PartSize // every committed part but the last is full
		default:
			return 0, fmt.Errorf("checkpoint parts: unexpected %s", cp.Parts)
		}
	}
	return n, nil
}

// logLevel is the daemon's log level: WFRUN_LOG_LEVEL (e.g. "debug", to
// see the engine's stream decisions in the run's daemon.log), else "warn".
func logLevel() string {
	if l := os.Getenv("WFRUN_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}

// reqMeter follows the HTTP/1.1 requests of one client stream (bodies with
// a Content-Length, as the S3 client sends them) and counts the body bytes
// of PUT requests.
type reqMeter struct {
	head []byte // the current request's header so far
	body int64  // body bytes still to come
	put  bool   // the current request is a PUT
}

// feed takes the next bytes of the stream and returns how many were PUT
// body bytes.
func (m *reqMeter) feed(b []byte) (media int64) {
	for len(b) > 0 {
		if m.body > 0 {
			n := min(int64(len(b)), m.body)
			if m.put {
				media += n
			}
			m.body -= n
			b = b[n:]
			continue
		}
		m.head = append(m.head, b...)
		i := bytes.Index(m.head, []byte("\r\n\r\n"))
		if i < 0 {
			if len(m.head) > 1<<20 { // not HTTP as expected: stop parsing
				m.head = m.head[:0]
			}
			return media
		}
		hdr := string(m.head[:i])
		b = append([]byte(nil), m.head[i+4:]...)
		m.head = m.head[:0]
		m.put = strings.HasPrefix(hdr, "PUT ")
		m.body = 0
		for line := range strings.SplitSeq(hdr, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
				m.body, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	return media
}
