package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// maxFFprobeOutput bounds what is read from ffprobe (a hostile file could
// declare thousands of streams).
const maxFFprobeOutput = 1 << 20

// FFprobe adds the stream facts ffprobe gives to facts from File: codec
// names as ffprobe spells them, and anything the built-in walk left empty
// (a fragmented MP4's duration and frame rate, formats it does not walk).
// The built-in check stays the verdict on the structure; a file ffprobe
// cannot read at all fails with an *Error. If bin ("" = "ffprobe") is not
// installed the error wraps exec.ErrNotFound and facts are returned as is.
func FFprobe(ctx context.Context, bin, path string, facts Facts) (Facts, error) {
	if bin == "" {
		bin = "ffprobe"
	}
	exe, err := exec.LookPath(bin)
	if err != nil {
		return facts, fmt.Errorf("probe: %w", err)
	}
	var out, errOut limitedBuffer
	out.max, errOut.max = maxFFprobeOutput, 4096
	cmd := exec.CommandContext(ctx, exe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "--", path)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return facts, ctx.Err()
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return facts, fmt.Errorf("probe: run ffprobe: %w", err)
		}
		line, _, _ := strings.Cut(strings.TrimSpace(errOut.String()), "\n")
		// ffprobe prefixes its message with the path; the job names it already.
		line = strings.TrimSpace(strings.TrimPrefix(line, path+":"))
		if line == "" {
			line = exit.String()
		}
		return facts, damaged(facts.Container, CodeFFprobeFailure, "ffprobe cannot read it (%s)", line)
	}
	if out.truncated {
		return facts, nil // too much to trust; keep the built-in facts
	}
	return mergeFFprobe(facts, out.Bytes()), nil
}

type ffprobeOutput struct {
	Streams []struct {
		CodecType    string `json:"codec_type"`
		CodecName    string `json:"codec_name"`
		Width        int    `json:"width"`
		Height       int    `json:"height"`
		AvgFrameRate string `json:"avg_frame_rate"`
		RFrameRate   string `json:"r_frame_rate"`
		Channels     int    `json:"channels"`
		SampleRate   string `json:"sample_rate"`
	} `json:"streams"`
	Format struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
	} `json:"format"`
}

func mergeFFprobe(f Facts, raw []byte) Facts {
	var o ffprobeOutput
	if err := json.Unmarshal(raw, &o); err != nil {
		return f
	}
	if f.Duration == 0 {
		if s, err := strconv.ParseFloat(o.Format.Duration, 64); err == nil && s > 0 && s < 1e9 {
			f.Duration = time.Duration(s * float64(time.Second))
		}
	}
	if f.Container == Unknown && o.Format.FormatName != "" {
		f.Container, _, _ = strings.Cut(o.Format.FormatName, ",")
	}
	var sawVideo, sawAudio bool
	for _, s := range o.Streams {
		switch {
		case s.CodecType == "video" && !sawVideo:
			sawVideo = true
			if f.Video == nil {
				f.Video = &Video{}
			}
			v := f.Video
			v.Codec = firstNonEmpty(s.CodecName, v.Codec)
			if v.Width == 0 || v.Height == 0 {
				v.Width, v.Height = s.Width, s.Height
			}
			if v.FrameRate == 0 {
				// r_frame_rate is the nominal rate (25/1) where avg_frame_rate
				// is skewed by a short clip's edges; a VFR file's r_frame_rate
				// is a timebase-like number, then the average is better.
				v.FrameRate = rate(s.RFrameRate)
				if v.FrameRate == 0 || v.FrameRate > 240 {
					v.FrameRate = rate(s.AvgFrameRate)
				}
			}
		case s.CodecType == "audio" && !sawAudio:
			sawAudio = true
			if f.Audio == nil {
				f.Audio = &Audio{}
			}
			a := f.Audio
			a.Codec = firstNonEmpty(s.CodecName, a.Codec)
			if a.Channels == 0 {
				a.Channels = s.Channels
			}
			if a.SampleRate == 0 {
				a.SampleRate, _ = strconv.Atoi(s.SampleRate)
			}
		}
	}
	return f
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// rate parses ffprobe's "30000/1001".
func rate(s string) float64 {
	n, d, ok := strings.Cut(s, "/")
	num, err1 := strconv.ParseFloat(n, 64)
	den, err2 := strconv.ParseFloat(d, 64)
	if !ok || err1 != nil || err2 != nil || den == 0 {
		return 0
	}
	r := math.Round(num/den*1000) / 1000
	if r <= 0 || r > 1e6 {
		return 0
	}
	return r
}

// limitedBuffer keeps the first max bytes written and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.Len(); room < len(p) {
		l.truncated = true
		if room > 0 {
			l.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return l.Buffer.Write(p)
}
