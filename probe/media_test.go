package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Real media made by a real encoder (Debian's ffmpeg, installed by `make
// test-deps`). Each fixture is a few seconds of small pictures and sound.

type fixture struct {
	name string
	args []string // ffmpeg output options, after the lavfi inputs
	// input: "av" (picture and sound), "a" (sound only)
	input string
	want  Facts
}

const clipSeconds = 3

func fixtures() []fixture {
	return []fixture{
		{
			name: "moov-at-end.mp4", input: "av",
			args: []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2"},
			want: Facts{Container: MP4, Video: &Video{Codec: "h264", Width: 320, Height: 240, FrameRate: 25}, Audio: &Audio{Codec: "aac", Channels: 2, SampleRate: 48000}, Tracks: 2},
		},
		{
			name: "faststart.mp4", input: "av",
			args: []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-movflags", "+faststart"},
			want: Facts{Container: MP4, Video: &Video{Codec: "h264", Width: 320, Height: 240, FrameRate: 25}, Audio: &Audio{Codec: "aac", Channels: 2, SampleRate: 48000}, Tracks: 2},
		},
		{
			name: "prores.mov", input: "av30",
			args: []string{"-c:v", "prores_ks", "-profile:v", "0", "-c:a", "pcm_s16le", "-ac", "2"},
			want: Facts{Container: MOV, Video: &Video{Codec: "prores", Width: 320, Height: 240, FrameRate: 29.97}, Audio: &Audio{Codec: "pcm", Channels: 2, SampleRate: 48000}, Tracks: 2},
		},
		{
			name: "fragmented.mp4", input: "av",
			args: []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "frag_keyframe+empty_moov", "-g", "25"},
			want: Facts{Container: MP4, Video: &Video{Codec: "h264", Width: 320, Height: 240}, Audio: &Audio{Codec: "aac", Channels: 1, SampleRate: 48000}, Tracks: 2},
		},
		{
			name: "sound.m4a", input: "a",
			args: []string{"-c:a", "aac", "-ac", "2"},
			want: Facts{Container: M4A, Audio: &Audio{Codec: "aac", Channels: 2, SampleRate: 48000}, Tracks: 1},
		},
		{
			name: "op1a.mxf", input: "av",
			args: []string{"-c:v", "mpeg2video", "-c:a", "pcm_s16le", "-ac", "2", "-f", "mxf"},
			want: Facts{Container: MXF, Pattern: "OP1a", Video: &Video{Codec: "mpeg2", Width: 320, Height: 240, FrameRate: 25}, Audio: &Audio{Codec: "pcm", Channels: 2, SampleRate: 48000}, Tracks: 2},
		},
		{
			name: "sound.wav", input: "a",
			args: []string{"-c:a", "pcm_s16le", "-ac", "2"},
			want: Facts{Container: WAV, Audio: &Audio{Codec: "pcm", Channels: 2, SampleRate: 48000}, Tracks: 1},
		},
	}
}

// makeMedia encodes the fixtures into dir.
func makeMedia(t testing.TB, dir string, fs []fixture) {
	t.Helper()
	if err := encodeFixtures(dir, fs); err != nil {
		t.Fatal(err)
	}
}

func encodeFixtures(dir string, fs []fixture) error {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		return fmt.Errorf("ffmpeg is required (make test-deps installs it): %w", err)
	}
	for _, f := range fs {
		args := []string{"-nostdin", "-v", "error", "-y"}
		switch f.input {
		case "av":
			args = append(args, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
		case "av30":
			args = append(args, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30000/1001", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
		case "a":
			args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
		}
		args = append(args, "-t", fmt.Sprint(clipSeconds))
		args = append(args, f.args...)
		args = append(args, filepath.Join(dir, f.name))
		if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ffmpeg %s: %v\n%s", f.name, err, out)
		}
	}
	return nil
}

// testMedia is the directory of the encoded fixtures, made once per test
// binary (encoding them takes seconds) and removed by TestMain. Tests only
// read these files; a test that changes one works on its own copy.
type testMedia struct {
	dir  string
	once sync.Once
	err  error
}

func (m *testMedia) get(t testing.TB) string {
	t.Helper()
	m.once.Do(func() { m.err = encodeFixtures(m.dir, fixtures()) })
	if m.err != nil {
		t.Fatal(m.err)
	}
	return m.dir
}

var shared *testMedia

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "probe-media-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = &testMedia{dir: dir}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestWholeFilesPass(t *testing.T) {
	dir := shared.get(t)
	fs := fixtures()
	for _, f := range fs {
		t.Run(f.name, func(t *testing.T) {
			got, err := File(context.Background(), filepath.Join(dir, f.name))
			if err != nil {
				t.Fatalf("whole file failed: %v", err)
			}
			if !got.Checked {
				t.Fatalf("not checked: %+v", got)
			}
			if got.Container != f.want.Container || got.Pattern != f.want.Pattern {
				t.Errorf("container %q %q, want %q %q", got.Container, got.Pattern, f.want.Container, f.want.Pattern)
			}
			if f.want.Tracks != 0 && got.Tracks != f.want.Tracks {
				t.Errorf("tracks %d, want %d", got.Tracks, f.want.Tracks)
			}
			// AAC priming and MXF edit units round the duration a little.
			if d := got.Duration.Seconds(); math.Abs(d-clipSeconds) > 0.1 && f.name != "fragmented.mp4" {
				t.Errorf("duration %v, want %d s", got.Duration, clipSeconds)
			}
			checkVideo(t, got.Video, f.want.Video)
			checkAudio(t, got.Audio, f.want.Audio)
			t.Logf("%s: %s", f.name, got.Summary())
		})
	}
}

func checkVideo(t *testing.T, got, want *Video) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("video %+v, want %+v", got, want)
	}
	if want == nil {
		return
	}
	if got.Codec != want.Codec || got.Width != want.Width || got.Height != want.Height {
		t.Errorf("video %+v, want %+v", *got, *want)
	}
	if want.FrameRate != 0 && math.Abs(got.FrameRate-want.FrameRate) > 0.01 {
		t.Errorf("frame rate %v, want %v", got.FrameRate, want.FrameRate)
	}
}

func checkAudio(t *testing.T, got, want *Audio) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("audio %+v, want %+v", got, want)
	}
	if want != nil && *got != *want {
		t.Errorf("audio %+v, want %+v", *got, *want)
	}
}

// cut is a truncation point: where, and what the probe must say.
type cut struct {
	name string
	at   func(t *testing.T, path string) int64
	code string
	word string // must appear in the editor's message
}

func TestTruncatedFilesFail(t *testing.T) {
	dir := shared.get(t)
	fs := fixtures()
	cases := map[string][]cut{
		"moov-at-end.mp4": {
			{"inside mdat", midBox("mdat"), CodeTruncated, "mdat"},
			{"after mdat, before moov", boxStart("moov"), CodeNoMoov, "moov"},
			{"inside moov", midBox("moov"), CodeTruncated, "moov"},
			{"one byte short", minus(1), CodeTruncated, "moov"},
		},
		"faststart.mp4": {
			{"inside moov", midBox("moov"), CodeTruncated, "moov"},
			{"inside mdat", midBox("mdat"), CodeTruncated, "mdat"},
			{"one byte short", minus(1), CodeTruncated, "mdat"},
		},
		"prores.mov": {
			{"inside mdat", midBox("mdat"), CodeTruncated, "mdat"},
			{"inside moov", midBox("moov"), CodeTruncated, "moov"},
			{"after mdat, before moov", boxStart("moov"), CodeNoMoov, "moov"},
		},
		"fragmented.mp4": {
			{"inside the last mdat", fraction(0.99), CodeTruncated, "mdat"},
		},
		"sound.m4a": {
			{"inside mdat", midBox("mdat"), CodeTruncated, "mdat"},
		},
		"op1a.mxf": {
			{"inside the essence", fraction(0.5), CodeFooterPastEnd, "footer"},
			{"inside the footer partition", midFooter, CodeTruncated, "footer"},
			{"just after the footer pack key", footerPlus(20), CodeTruncated, "footer"},
			{"one byte short", minus(1), CodeTruncated, "footer"},
		},
		"sound.wav": {
			{"inside data", fraction(0.5), CodeRIFFSize, "RIFF"},
			{"one byte short", minus(1), CodeRIFFSize, "RIFF"},
		},
	}
	for _, f := range fs {
		for _, c := range cases[f.name] {
			t.Run(f.name+"/"+c.name, func(t *testing.T) {
				src := filepath.Join(dir, f.name)
				at := c.at(t, src)
				dst := filepath.Join(t.TempDir(), f.name)
				copyPrefix(t, src, dst, at)
				_, err := File(context.Background(), dst)
				var pe *Error
				if !errors.As(err, &pe) {
					t.Fatalf("cut at %d: got %v, want a probe error %s", at, err, c.code)
				}
				if pe.Code != c.code || !pe.Incomplete {
					t.Fatalf("cut at %d: code %q incomplete %v (%v), want %q incomplete", at, pe.Code, pe.Incomplete, err, c.code)
				}
				msg := err.Error()
				if !strings.Contains(msg, c.word) || !strings.HasPrefix(msg, "the export is incomplete: ") || !strings.HasSuffix(msg, "; re-export the file") {
					t.Fatalf("message %q lacks %q or the editor's wording", msg, c.word)
				}
			})
		}
	}
}

func TestTrailingGarbageFails(t *testing.T) {
	dir := shared.get(t)
	for _, tc := range []struct {
		name, code string
		tail       []byte
		incomplete bool
	}{
		{"moov-at-end.mp4", CodeTrailing, []byte("\x01garbage that is no box"), false},
		{"moov-at-end.mp4", CodeTrailing, make([]byte, 4096), true},
		{"op1a.mxf", CodeTrailing, []byte("junk after the RIP"), false},
		{"sound.wav", CodeRIFFSize, []byte("junk"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(t.TempDir(), tc.name)
			if err := os.WriteFile(dst, append(b, tc.tail...), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = File(context.Background(), dst)
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.code || pe.Incomplete != tc.incomplete {
				t.Fatalf("got %v (%+v), want code %s incomplete=%v", err, pe, tc.code, tc.incomplete)
			}
		})
	}
}

func copyPrefix(t *testing.T, src, dst string, n int64) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || n >= int64(len(b)) {
		t.Fatalf("cut point %d outside the file of %d bytes", n, len(b))
	}
	if err := os.WriteFile(dst, b[:n], 0o644); err != nil {
		t.Fatal(err)
	}
}

// topBox finds a top-level box in the fixture by walking it with the
// code under test's own header reader (checked against the file size).
func topBox(t *testing.T, path, typ string) box {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	s := &src{r: f, size: st.Size(), ctx: context.Background()}
	for off := int64(0); off < s.size; {
		b, err := s.header(off, s.size)
		if err != nil {
			t.Fatalf("header at %d: %v", off, err)
		}
		if b.typ == typ {
			return b
		}
		off = b.end()
	}
	t.Fatalf("no %s box in %s", typ, path)
	return box{}
}

func midBox(typ string) func(*testing.T, string) int64 {
	return func(t *testing.T, p string) int64 { b := topBox(t, p, typ); return b.off + b.size/2 }
}

func boxStart(typ string) func(*testing.T, string) int64 {
	return func(t *testing.T, p string) int64 { return topBox(t, p, typ).off }
}

func size(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func minus(n int64) func(*testing.T, string) int64 {
	return func(t *testing.T, p string) int64 { return size(t, p) - n }
}

func fraction(f float64) func(*testing.T, string) int64 {
	return func(t *testing.T, p string) int64 { return int64(float64(size(t, p)) * f) }
}

// footerAt returns the footer partition offset the header partition names.
func footerAt(t *testing.T, p string) int64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &src{r: f, size: size(t, p), ctx: context.Background()}
	k, err := s.klvAt(0, s.size)
	if err != nil {
		t.Fatal(err)
	}
	hp, ok := s.partitionAt(k)
	if !ok || hp.footer == 0 {
		t.Fatalf("fixture has no footer offset in its header: %+v", hp)
	}
	return int64(hp.footer)
}

func midFooter(t *testing.T, p string) int64 {
	at := footerAt(t, p)
	return at + (size(t, p)-at)/2
}

func footerPlus(n int64) func(*testing.T, string) int64 {
	return func(t *testing.T, p string) int64 { return footerAt(t, p) + n }
}

func TestFileErrorsAreNotProbeErrors(t *testing.T) {
	_, err := File(context.Background(), filepath.Join(t.TempDir(), "missing.mp4"))
	var pe *Error
	if err == nil || errors.As(err, &pe) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a wrapped not-exist error that is no *Error", err)
	}
}

func TestContextCancelStopsTheWalk(t *testing.T) {
	// A long chain of tiny top-level boxes: the walk must notice the
	// cancelled context rather than read them all.
	b := ftyp("isom")
	for range 100000 {
		b = append(b, mkbox("free", nil)...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Reader(ctx, bytesReader(b), int64(len(b)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	f := Facts{Container: MP4, Checked: true, Duration: 2500 * time.Millisecond, Video: &Video{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 25}}
	b, err := f.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"duration_seconds":2.5`) {
		t.Fatalf("json %s lacks the duration in seconds", b)
	}
	var g Facts
	if err := g.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	if g.Duration != f.Duration || *g.Video != *f.Video || g.Container != f.Container || !g.Checked {
		t.Fatalf("round trip %+v, want %+v", g, f)
	}
	if s := f.Summary(); s != "mp4, 2.5 s, h264 1920x1080 25 fps" {
		t.Fatalf("summary %q", s)
	}
}

// An MXF whose header does not know where its footer is (a writer that
// cannot seek back): the footer is found through the Random Index Pack.
func TestMXFFooterFromRIP(t *testing.T) {
	dir := shared.get(t)
	orig, err := os.ReadFile(filepath.Join(dir, "op1a.mxf"))
	if err != nil {
		t.Fatal(err)
	}
	s := &src{r: bytesReader(orig), size: int64(len(orig)), ctx: context.Background()}
	hk, err := s.klvAt(0, s.size)
	if err != nil {
		t.Fatal(err)
	}
	footer := int64(binary.BigEndian.Uint64(orig[hk.value()+24:]))
	open := append([]byte(nil), orig...)
	binary.BigEndian.PutUint64(open[hk.value()+24:], 0) // FooterPartition unknown
	open[14] = 0x01                                     // header open and incomplete
	ripLen := int(binary.BigEndian.Uint32(orig[len(orig)-4:]))
	footerOpen := append([]byte(nil), open...)
	footerOpen[footer+14] = 0x01
	ripPast := append([]byte(nil), open...)
	binary.BigEndian.PutUint64(ripPast[len(ripPast)-12:], uint64(2*len(ripPast)))

	for _, tc := range []struct {
		name string
		data []byte
		code string
	}{
		{"footer through the RIP", open, ""},
		{"RIP cut off, header open", open[:len(open)-ripLen], CodeNoFooter},
		{"footer partition open", footerOpen, CodeFooterOpen},
		{"RIP points past the end", ripPast, CodeFooterPastEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := run(tc.data)
			if tc.code == "" {
				if err != nil || !f.Checked || f.Pattern != "OP1a" {
					t.Fatalf("got %+v %v, want a pass", f, err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

// A render killed mid-way (SIGKILL, no trailer written): whatever the
// encoder left must fail as incomplete.
func TestKilledWriterFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code string
	}{
		{"killed.mxf", []string{"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
			"-c:v", "mpeg2video", "-c:a", "pcm_s16le", "-ac", "2", "-f", "mxf"}, CodeNoFooter},
		{"killed.wav", []string{"-f", "lavfi", "-i", "sine=sample_rate=48000", "-c:a", "pcm_s16le", "-ac", "2"}, CodeRIFFSize},
		{"killed.mov", []string{"-f", "lavfi", "-i", "testsrc=size=640x480:rate=25", "-c:v", "mpeg4", "-q:v", "1"}, CodeNoMoov},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // ffmpeg -re mostly waits for the clock
			p := filepath.Join(t.TempDir(), tc.name)
			args := append([]string{"-nostdin", "-v", "error", "-y", "-re"}, tc.args...)
			cmd := exec.Command("ffmpeg", append(append(args, "-t", "60"), p)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				if st, err := os.Stat(p); err == nil && st.Size() > 128<<10 {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatal("ffmpeg wrote less than 128 KiB in 30 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			cmd.Process.Kill()
			cmd.Wait()
			_, err := File(context.Background(), p)
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.code || !pe.Incomplete {
				t.Fatalf("got %v, want incomplete %s", err, tc.code)
			}
			t.Log(err)
		})
	}
}
