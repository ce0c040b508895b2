// Package probe checks that a media file is structurally whole before it is
// delivered, and reads the facts an operator or a platform wants to know
// (container, duration, codecs, picture size, frame rate, audio layout).
//
// It reads the container's structure, never the essence: ISO BMFF and
// QuickTime (MP4, MOV, M4A) box trees, MXF partitions and header metadata,
// WAV (RIFF/RF64) chunks. Every read is bounded by a small constant, never
// by a length field taken from the file, so hostile input costs at most a
// few kilobytes of memory. Other formats are reported as not checked.
package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Container names reported in Facts.Container.
const (
	MP4     = "mp4"
	MOV     = "mov"
	M4A     = "m4a"
	ThreeGP = "3gp"
	MXF     = "mxf"
	WAV     = "wav"
	Unknown = "unknown"
)

// Facts are what the probe learnt about a file.
type Facts struct {
	// Container is one of the constants above, or a name taken from a
	// recognised signature (e.g. "mpeg-ts") when the file is not checked.
	Container string
	// Checked is true when the container's structure was walked and found
	// whole. False means "unknown format, not checked".
	Checked bool
	// Duration is zero when the container does not say.
	Duration time.Duration
	// Pattern is the MXF operational pattern (e.g. "OP1a").
	Pattern string
	Video   *Video
	Audio   *Audio
	// Tracks counts the tracks (MP4/MOV) or essence tracks (MXF) seen.
	Tracks int
	// Problem is the check's complaint when the caller chose to deliver
	// the file anyway (a folder that only warns); empty otherwise.
	Problem string
}

// Video describes the first video track.
type Video struct {
	Codec     string  `json:"codec,omitempty"`
	Width     int     `json:"width,omitempty"`
	Height    int     `json:"height,omitempty"`
	FrameRate float64 `json:"frame_rate,omitempty"`
}

// Audio describes the first audio track.
type Audio struct {
	Codec      string `json:"codec,omitempty"`
	Channels   int    `json:"channels,omitempty"`
	SampleRate int    `json:"sample_rate,omitempty"`
}

// factsJSON is the wire form: the duration in seconds, which is what
// receipts, webhooks and `list --json` readers expect.
type factsJSON struct {
	Container string  `json:"container"`
	Checked   bool    `json:"checked"`
	Duration  float64 `json:"duration_seconds,omitempty"`
	Pattern   string  `json:"operational_pattern,omitempty"`
	Video     *Video  `json:"video,omitempty"`
	Audio     *Audio  `json:"audio,omitempty"`
	Tracks    int     `json:"tracks,omitempty"`
	Problem   string  `json:"problem,omitempty"`
}

// MarshalJSON writes the duration as seconds.
func (f Facts) MarshalJSON() ([]byte, error) {
	return json.Marshal(factsJSON{
		Container: f.Container, Checked: f.Checked, Duration: math.Round(f.Duration.Seconds()*1000) / 1000,
		Pattern: f.Pattern, Video: f.Video, Audio: f.Audio, Tracks: f.Tracks, Problem: f.Problem,
	})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (f *Facts) UnmarshalJSON(b []byte) error {
	var w factsJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*f = Facts{
		Container: w.Container, Checked: w.Checked, Duration: time.Duration(w.Duration * float64(time.Second)),
		Pattern: w.Pattern, Video: w.Video, Audio: w.Audio, Tracks: w.Tracks, Problem: w.Problem,
	}
	return nil
}

// Summary is one line for people: "mp4, 12.5 s, h264 1920x1080 25 fps, aac 2 ch 48000 Hz".
func (f Facts) Summary() string {
	if !f.Checked && f.Container == Unknown {
		return "unknown format, not checked"
	}
	parts := []string{f.Container}
	if f.Pattern != "" {
		parts[0] += " " + f.Pattern
	}
	if !f.Checked {
		parts = append(parts, "not checked")
	}
	if f.Duration > 0 {
		parts = append(parts, fmt.Sprintf("%.3g s", f.Duration.Seconds()))
		if f.Duration >= 1000*time.Second {
			parts[len(parts)-1] = fmt.Sprintf("%.0f s", f.Duration.Seconds())
		}
	}
	if v := f.Video; v != nil {
		s := v.Codec
		if v.Width > 0 && v.Height > 0 {
			s += fmt.Sprintf(" %dx%d", v.Width, v.Height)
		}
		if v.FrameRate > 0 {
			s += fmt.Sprintf(" %.4g fps", v.FrameRate)
		}
		parts = append(parts, strings.TrimSpace(s))
	}
	if a := f.Audio; a != nil {
		s := a.Codec
		if a.Channels > 0 {
			s += fmt.Sprintf(" %d ch", a.Channels)
		}
		if a.SampleRate > 0 {
			s += fmt.Sprintf(" %d Hz", a.SampleRate)
		}
		parts = append(parts, strings.TrimSpace(s))
	}
	return strings.Join(parts, ", ")
}

// Error says why a file failed the check, in words an editor understands.
// Errors reading the file (permissions, I/O) are not *Error: they are
// returned wrapped, and a caller may retry them.
type Error struct {
	Container string
	// Code is a short stable identifier, e.g. "no-moov" (see the Code
	// constants); tests and metrics use it, people read Reason.
	Code string
	// Reason is the plain-words cause, e.g. "no movie header (moov)".
	Reason string
	// Incomplete is true when the file was cut short (the writer did not
	// finish), false when it is damaged or not what its name says.
	Incomplete bool
}

func (e *Error) Error() string {
	if e.Incomplete {
		return "the export is incomplete: " + e.Reason + "; re-export the file"
	}
	return "the file is damaged: " + e.Reason + "; re-export the file"
}

// Codes of Error.
const (
	CodeEmpty          = "empty"           // zero bytes
	CodeNotContainer   = "not-container"   // the name says a known container, the bytes do not
	CodeTruncated      = "truncated"       // a box/KLV/chunk runs past the end of the file
	CodeTrailing       = "trailing-data"   // bytes after the last box that belong to nothing
	CodeBadBox         = "bad-box"         // a box header that cannot be right
	CodeNoMoov         = "no-moov"         // no movie header
	CodeNoMvhd         = "no-mvhd"         // movie header without mvhd
	CodeChunkPastEnd   = "chunk-past-end"  // a track's media lies beyond the end of the file
	CodeNoHeader       = "no-header"       // MXF without a header partition pack
	CodeNoFooter       = "no-footer"       // MXF without a footer partition
	CodeFooterPastEnd  = "footer-past-end" // MXF footer offset beyond the end of the file
	CodeFooterOpen     = "footer-open"     // MXF footer not closed and complete
	CodeBadPartition   = "bad-partition"   // MXF partition pack that cannot be right
	CodeRIFFSize       = "riff-size"       // WAV RIFF size does not match the file
	CodeNoData         = "no-data"         // WAV without a data chunk
	CodeNoFormat       = "no-format"       // WAV without a fmt chunk
	CodeFFprobeFailure = "ffprobe"         // ffprobe could not read the file
)

func incomplete(container, code, format string, args ...any) *Error {
	return &Error{Container: container, Code: code, Reason: fmt.Sprintf(format, args...), Incomplete: true}
}

func damaged(container, code, format string, args ...any) *Error {
	return &Error{Container: container, Code: code, Reason: fmt.Sprintf(format, args...)}
}

// KnownExtension reports whether name's extension is one of the containers
// this package checks (.mp4 .m4v .m4a .mov .3gp .mxf .wav). A file with such
// a name must look like that container.
func KnownExtension(name string) bool { return extContainer(name) != "" }

func extContainer(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".mp4", ".m4v", ".mov", ".qt", ".m4a", ".3gp", ".3g2", ".m4b", ".m4p":
		return MP4
	case ".mxf":
		return MXF
	case ".wav", ".bwf":
		return WAV
	}
	return ""
}

// File probes the file at path. The name's extension decides only whether
// an unrecognised file is an error (a .mov that is not QuickTime) or merely
// unknown; the container itself is recognised by its first bytes.
func File(ctx context.Context, path string) (Facts, error) {
	f, err := os.Open(path)
	if err != nil {
		return Facts{}, fmt.Errorf("probe: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Facts{}, fmt.Errorf("probe %s: %w", path, err)
	}
	facts, err := probe(ctx, f, st.Size(), extContainer(path))
	if err != nil && !isContentError(err) {
		err = fmt.Errorf("probe %s: %w", path, err)
	}
	return facts, err
}

// Reader probes size bytes of r, recognising the container by its first
// bytes alone: an unrecognised stream is reported as unknown, not checked.
func Reader(ctx context.Context, r io.ReaderAt, size int64) (Facts, error) {
	return probe(ctx, r, size, "")
}

func isContentError(err error) bool {
	var pe *Error
	return errors.As(err, &pe)
}

func probe(ctx context.Context, r io.ReaderAt, size int64, byName string) (Facts, error) {
	s := &src{r: r, size: size, ctx: ctx}
	if size <= 0 {
		if byName != "" {
			return Facts{Container: byName}, damaged(byName, CodeEmpty, "the file is empty")
		}
		return Facts{Container: Unknown}, nil
	}
	head, err := s.read(0, min(size, 64))
	if err != nil {
		return Facts{}, err
	}
	kind := sniff(head)
	switch kind {
	case MP4:
		return walkBMFF(s)
	case MXF:
		return walkMXF(s)
	case WAV:
		return walkWAV(s)
	case "":
		if byName == MXF {
			return walkMXF(s) // the header may follow a run-in
		}
		kind = Unknown
	}
	if byName != "" {
		return Facts{Container: byName}, damaged(byName, CodeNotContainer, "its name says %s but its contents are not %s", describe(byName), describe(byName))
	}
	return Facts{Container: kind}, nil
}

func describe(container string) string {
	switch container {
	case MP4:
		return "MP4/MOV"
	case MXF:
		return "MXF"
	case WAV:
		return "WAV"
	}
	return container
}

// sniff names the container from the first bytes of the file. Only MP4,
// MXF and WAV are walked; the other names just label an unchecked file.
func sniff(h []byte) string {
	if len(h) >= 8 {
		switch string(h[4:8]) {
		case "ftyp", "moov", "mdat", "wide", "free", "skip", "pnot", "styp":
			return MP4
		}
	}
	if len(h) >= 12 && (string(h[:4]) == "RIFF" || string(h[:4]) == "RF64" || string(h[:4]) == "BW64") && string(h[8:12]) == "WAVE" {
		return WAV
	}
	// MXF may start with a run-in of up to 64 KiB; walkMXF searches for it.
	// Here only the common case (no run-in) and the partition key prefix.
	if isPartitionPrefix(h) {
		return MXF
	}
	switch {
	case len(h) >= 4 && h[0] == 0x1a && h[1] == 0x45 && h[2] == 0xdf && h[3] == 0xa3:
		return "matroska"
	case len(h) >= 4 && h[0] == 0 && h[1] == 0 && h[2] == 1 && h[3] == 0xba:
		return "mpeg-ps"
	case len(h) >= 1 && h[0] == 0x47:
		return "mpeg-ts"
	case len(h) >= 12 && string(h[:4]) == "FORM" && (string(h[8:12]) == "AIFF" || string(h[8:12]) == "AIFC"):
		return "aiff"
	}
	return ""
}

// durationOf converts count units of 1/scale seconds without overflow.
func durationOf(count, scale uint64) time.Duration {
	if scale == 0 {
		return 0
	}
	secs, rem := count/scale, count%scale
	if secs >= uint64(math.MaxInt64/int64(time.Second)) {
		return 0 // absurd: treat as unknown rather than wrap
	}
	return time.Duration(secs)*time.Second + time.Duration(rem*uint64(time.Second)/scale)
}

// src reads bounded pieces of the input.
type src struct {
	r     io.ReaderAt
	size  int64
	ctx   context.Context
	buf   [maxRead]byte
	reads int
}

// maxRead bounds every single read; nothing larger is ever allocated.
const maxRead = 4096

// read returns n (<= maxRead) bytes at off; the slice is valid until the
// next read. Reading past the end is io.ErrUnexpectedEOF.
func (s *src) read(off, n int64) ([]byte, error) {
	if n < 0 || n > maxRead {
		return nil, fmt.Errorf("probe: read of %d bytes exceeds the bound", n)
	}
	if off < 0 || off > s.size || n > s.size-off {
		return nil, io.ErrUnexpectedEOF
	}
	s.reads++
	if s.reads%1024 == 0 {
		if err := s.ctx.Err(); err != nil {
			return nil, err
		}
	}
	b := s.buf[:n]
	got, err := s.r.ReadAt(b, off)
	if got == int(n) {
		return b, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("read at %d: %w", off, err)
}
