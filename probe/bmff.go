package probe

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
)

// ISO BMFF (ISO/IEC 14496-12) and QuickTime share the box layout: a 32-bit
// size (1: a 64-bit size follows the type; 0: the box runs to the end of
// the file) and a four-character type.

type box struct {
	typ  string
	off  int64 // start of the header
	hdr  int64 // header length (8 or 16)
	size int64 // whole box
}

func (b box) body() int64 { return b.off + b.hdr }
func (b box) end() int64  { return b.off + b.size }

// maxNested bounds the boxes visited inside moov so a hostile file cannot
// make the walk long; real movies have a few hundred.
const maxNested = 20000

// errStop ends a children walk early without an error.
var errStop = errors.New("stop")

func boxName(t string) string {
	switch t {
	case "moov":
		return "movie header (moov)"
	case "mdat":
		return "media data (mdat)"
	case "ftyp":
		return "file type box (ftyp)"
	case "moof":
		return "movie fragment (moof)"
	}
	return "'" + printable(t) + "' box"
}

func printable(t string) string {
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if c := t[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// validType reports whether t looks like a box type: four printable
// characters (QuickTime also uses 0xA9 '©' in metadata boxes).
func validType(t []byte) bool {
	for _, c := range t {
		if (c < 0x20 || c > 0x7e) && c != 0xa9 {
			return false
		}
	}
	return true
}

// header reads the box header at off, inside [off, end). A header that does
// not fit, or a size smaller than its header, is an error; a box running
// past end is returned as is (the caller decides what that means).
func (s *src) header(off, end int64) (box, error) {
	if end-off < 8 {
		return box{}, errShortHeader
	}
	h, err := s.read(off, min(16, end-off))
	if err != nil {
		return box{}, err
	}
	b := box{typ: string(h[4:8]), off: off, hdr: 8}
	if !validType(h[4:8]) {
		return b, errBadType
	}
	sz := uint64(binary.BigEndian.Uint32(h[0:4]))
	switch sz {
	case 0:
		b.size = end - off
	case 1:
		if len(h) < 16 {
			return b, errShortHeader
		}
		sz = binary.BigEndian.Uint64(h[8:16])
		b.hdr = 16
		if sz > math.MaxInt64 {
			b.size = math.MaxInt64 - off // runs past anything
			return b, nil
		}
		b.size = int64(sz)
	default:
		b.size = int64(sz)
	}
	if b.size < b.hdr {
		return b, errSmallBox
	}
	return b, nil
}

var (
	errShortHeader = errors.New("short header")
	errBadType     = errors.New("bad type")
	errSmallBox    = errors.New("box smaller than header")
)

type bmff struct {
	s     *src
	facts Facts
	nodes int
	depth int // boxes descended below trak
	// movieScale is mvhd's timescale (mehd counts in it).
	movieScale uint32
	// per track, reset for each trak
	trk track
}

type track struct {
	handler       string
	timescale     uint32
	duration      uint64
	width, height int
	codec         string
	channels      int
	sampleRate    int
	sttsCount     uint32
	sttsDelta     uint32
	samples       uint32
	lastChunk     uint64 // offset of the last chunk (stco/co64), 0 if none
	hasChunks     bool
}

func walkBMFF(s *src) (Facts, error) {
	w := &bmff{s: s, facts: Facts{Container: MP4}}
	var moov box
	var haveMoov bool
	off := int64(0)
	for n := 0; off < s.size; n++ {
		b, err := s.header(off, s.size)
		switch {
		case errors.Is(err, errShortHeader):
			if off > 0 && allZero(s, off) {
				return w.facts, incomplete(w.facts.Container, CodeTrailing, "the file ends with %d zero bytes after the last box (the write stopped early)", s.size-off)
			}
			return w.facts, incomplete(w.facts.Container, CodeTruncated, "the file ends inside a box header at byte %d", off)
		case errors.Is(err, errBadType), errors.Is(err, errSmallBox):
			if n == 0 {
				return w.facts, damaged(w.facts.Container, CodeBadBox, "the first box is not valid")
			}
			if allZero(s, off) {
				return w.facts, incomplete(w.facts.Container, CodeTrailing, "the file ends with %d zero bytes after the last box (the write stopped early)", s.size-off)
			}
			return w.facts, damaged(w.facts.Container, CodeTrailing, "%d bytes after byte %d are not part of any box", s.size-off, off)
		case err != nil:
			return w.facts, err
		}
		if n == 0 {
			if b.typ == "ftyp" {
				w.brand()
			} else {
				w.facts.Container = MOV // pre-ftyp QuickTime
			}
		}
		if b.size > s.size-off && n > 0 && !topLevel(b.typ) {
			return w.facts, damaged(w.facts.Container, CodeTrailing, "%d bytes after byte %d are not part of any box", s.size-off, off)
		}
		if b.size > s.size-off {
			return w.facts, incomplete(w.facts.Container, CodeTruncated, "the file ends inside the %s: %d of %d bytes present", boxName(b.typ), s.size-off, b.size)
		}
		if b.typ == "moov" && !haveMoov {
			moov, haveMoov = b, true
		}
		off = b.end()
		if n%4096 == 4095 {
			if err := s.ctx.Err(); err != nil {
				return w.facts, err
			}
		}
	}
	if !haveMoov {
		return w.facts, incomplete(w.facts.Container, CodeNoMoov, "no movie header (moov)")
	}
	if err := w.moov(moov); err != nil {
		return w.facts, err
	}
	w.facts.Checked = true
	return w.facts, nil
}

// topLevel reports whether t is a box type found at the top of a movie
// file. An unknown type whose size runs past the end is more likely
// garbage than a cut box.
func topLevel(t string) bool {
	switch t {
	case "ftyp", "moov", "mdat", "free", "skip", "wide", "uuid", "meta", "pdin", "moof", "mfra",
		"styp", "sidx", "ssix", "prft", "emsg", "pnot", "PICT", "udta", "junk", "bloc", "jumb":
		return true
	}
	return false
}

// allZero reports whether the first bytes from off are zero: what a
// preallocated file holds where the writer never got to.
func allZero(s *src, off int64) bool {
	b, err := s.read(off, min(s.size-off, 512))
	if err != nil {
		return false
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (w *bmff) brand() {
	h, err := w.s.read(0, min(w.s.size, 12))
	if err != nil || len(h) < 12 {
		return
	}
	major := string(h[8:12])
	switch {
	case major == "qt  ":
		w.facts.Container = MOV
	case major == "M4A " || major == "M4B " || major == "M4P ":
		w.facts.Container = M4A
	case strings.HasPrefix(major, "3g"):
		w.facts.Container = ThreeGP
	}
}

// children calls fn for each box inside parent's body. A child running past
// its parent means the movie header is damaged.
func (w *bmff) children(parent box, start int64, fn func(box) error) error {
	end := parent.end()
	for off := start; off < end; {
		w.nodes++
		if w.nodes > maxNested {
			return errStop
		}
		b, err := w.s.header(off, end)
		if errors.Is(err, errShortHeader) && end-off < 8 {
			// QuickTime allows a 4-byte zero terminator at the end of some
			// atoms; anything shorter than a header is ignored.
			return nil
		}
		if err != nil {
			if errors.Is(err, errBadType) || errors.Is(err, errSmallBox) || errors.Is(err, errShortHeader) {
				return damaged(w.facts.Container, CodeBadBox, "the %s holds an invalid box at byte %d", boxName(parent.typ), off)
			}
			return err
		}
		if b.size > end-off {
			return damaged(w.facts.Container, CodeBadBox, "the %s inside the %s runs past its end", boxName(b.typ), boxName(parent.typ))
		}
		if err := fn(b); err != nil {
			return err
		}
		off = b.end()
	}
	return nil
}

func (w *bmff) moov(moov box) error {
	var mvhd bool
	err := w.children(moov, moov.body(), func(b box) error {
		switch b.typ {
		case "mvhd":
			mvhd = true
			return w.mvhd(b)
		case "trak":
			w.trk = track{}
			if err := w.children(b, b.body(), w.trak); err != nil {
				return err
			}
			return w.endTrack()
		case "mvex":
			return w.children(b, b.body(), func(c box) error {
				if c.typ == "mehd" && w.facts.Duration == 0 {
					return w.mehd(c)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	if !mvhd {
		return damaged(w.facts.Container, CodeNoMvhd, "the movie header (moov) has no mvhd box")
	}
	return nil
}

// fixed reads a box body of at least need bytes (at most maxRead).
func (w *bmff) fixed(b box, need int64) ([]byte, bool) {
	n := min(b.size-b.hdr, maxRead)
	if n < need {
		return nil, false
	}
	p, err := w.s.read(b.body(), n)
	if err != nil {
		return nil, false
	}
	return p, true
}

func (w *bmff) mvhd(b box) error {
	p, ok := w.fixed(b, 20)
	if !ok {
		return damaged(w.facts.Container, CodeBadBox, "the mvhd box is too short")
	}
	var ts uint32
	var dur uint64
	if p[0] == 1 {
		if len(p) < 32 {
			return damaged(w.facts.Container, CodeBadBox, "the mvhd box is too short")
		}
		ts = binary.BigEndian.Uint32(p[20:24])
		dur = binary.BigEndian.Uint64(p[24:32])
		if dur == math.MaxUint64 {
			dur = 0
		}
	} else {
		ts = binary.BigEndian.Uint32(p[12:16])
		dur = uint64(binary.BigEndian.Uint32(p[16:20]))
		if dur == math.MaxUint32 {
			dur = 0
		}
	}
	w.movieScale = ts
	if d := durationOf(dur, uint64(ts)); d > 0 {
		w.facts.Duration = d
	}
	return nil
}

func (w *bmff) mehd(b box) error {
	// A fragmented movie's mvhd may say 0; mehd has the whole duration in
	// the movie timescale (mvhd comes first in moov).
	p, ok := w.fixed(b, 8)
	if !ok {
		return nil
	}
	var dur uint64
	if p[0] == 1 && len(p) >= 12 {
		dur = binary.BigEndian.Uint64(p[4:12])
	} else {
		dur = uint64(binary.BigEndian.Uint32(p[4:8]))
	}
	w.facts.Duration = durationOf(dur, uint64(w.movieScale))
	return nil
}

func (w *bmff) trak(b box) error {
	switch b.typ {
	case "tkhd":
		p, ok := w.fixed(b, 84)
		if !ok {
			return nil
		}
		o := 76
		if p[0] == 1 {
			o = 88
		}
		if len(p) >= o+8 {
			w.trk.width = int(binary.BigEndian.Uint32(p[o:o+4]) >> 16)
			w.trk.height = int(binary.BigEndian.Uint32(p[o+4:o+8]) >> 16)
		}
	case "mdia", "minf", "stbl":
		// trak/mdia/minf/stbl: three levels; a file nesting deeper is
		// not descended (its recursion would be the file's to choose).
		if w.depth >= 3 {
			return nil
		}
		w.depth++
		defer func() { w.depth-- }()
		return w.children(b, b.body(), w.trak)
	case "mdhd":
		p, ok := w.fixed(b, 20)
		if !ok {
			return nil
		}
		if p[0] == 1 && len(p) >= 32 {
			w.trk.timescale = binary.BigEndian.Uint32(p[20:24])
			w.trk.duration = binary.BigEndian.Uint64(p[24:32])
		} else if p[0] == 0 {
			w.trk.timescale = binary.BigEndian.Uint32(p[12:16])
			w.trk.duration = uint64(binary.BigEndian.Uint32(p[16:20]))
		}
	case "hdlr":
		// The media's hdlr (in mdia) comes first; QuickTime's data
		// handler in minf ("dhlr") must not override it.
		p, ok := w.fixed(b, 12)
		if ok && w.trk.handler == "" {
			w.trk.handler = string(p[8:12])
		}
	case "stsd":
		w.stsd(b)
	case "stts":
		// The frame duration is the delta that covers the most samples
		// among the first entries (one bounded read): a stream-copied or
		// edited file has a few odd entries around its joins.
		p, ok := w.fixed(b, 16)
		if ok {
			w.trk.sttsCount = binary.BigEndian.Uint32(p[4:8])
			var most uint32
			for i := 8; i+8 <= len(p) && uint32(i/8) <= w.trk.sttsCount; i += 8 {
				if n := binary.BigEndian.Uint32(p[i : i+4]); n > most {
					most, w.trk.sttsDelta = n, binary.BigEndian.Uint32(p[i+4:i+8])
				}
			}
		}
	case "stsz", "stz2":
		p, ok := w.fixed(b, 12)
		if ok {
			w.trk.samples = binary.BigEndian.Uint32(p[8:12])
		}
	case "stco", "co64":
		return w.lastChunk(b)
	}
	return nil
}

// lastChunk reads the last chunk offset of the track: one small read, and
// the check that catches a movie whose header is whole but whose media
// data was cut (moov at the front, mdat of size 0 = "to end of file").
func (w *bmff) lastChunk(b box) error {
	p, ok := w.fixed(b, 8)
	if !ok {
		return nil
	}
	count := int64(binary.BigEndian.Uint32(p[4:8]))
	if count == 0 {
		return nil
	}
	width := int64(4)
	if b.typ == "co64" {
		width = 8
	}
	body := b.size - b.hdr
	if count > (body-8)/width {
		return damaged(w.facts.Container, CodeBadBox, "the chunk table (%s) claims more entries than it holds", b.typ)
	}
	q, err := w.s.read(b.body()+8+(count-1)*width, width)
	if err != nil {
		return err
	}
	w.trk.hasChunks = true
	if width == 4 {
		w.trk.lastChunk = uint64(binary.BigEndian.Uint32(q))
	} else {
		w.trk.lastChunk = binary.BigEndian.Uint64(q)
	}
	return nil
}

// stsd reads the first sample entry: its type is the codec; visual and
// audio entries carry the picture size and the audio layout.
func (w *bmff) stsd(b box) {
	p, ok := w.fixed(b, 16)
	if !ok || binary.BigEndian.Uint32(p[4:8]) == 0 {
		return
	}
	esize := int64(binary.BigEndian.Uint32(p[8:12]))
	if esize < 16 || 8+esize > int64(len(p)) {
		// The entry is larger than one bounded read (e.g. long codec
		// configuration): the type and the fixed fields still fit.
		esize = min(int64(len(p))-8, 64)
	}
	e := p[8 : 8+esize]
	if !validType(e[4:8]) {
		return
	}
	w.trk.codec = string(e[4:8])
	switch w.trk.handler {
	case "vide":
		if len(e) >= 36 {
			w.trk.width = int(binary.BigEndian.Uint16(e[32:34]))
			w.trk.height = int(binary.BigEndian.Uint16(e[34:36]))
		}
	case "soun":
		if len(e) < 36 {
			return
		}
		version := binary.BigEndian.Uint16(e[16:18])
		w.trk.channels = int(binary.BigEndian.Uint16(e[24:26]))
		w.trk.sampleRate = int(binary.BigEndian.Uint32(e[32:36]) >> 16)
		children := 36
		switch version {
		case 1:
			children = 52
		case 2:
			children = 72
			if len(e) >= 52 {
				// QuickTime sound description v2: float64 rate, uint32 channels.
				rate := math.Float64frombits(binary.BigEndian.Uint64(e[40:48]))
				if rate > 0 && rate < 1e7 {
					w.trk.sampleRate = int(rate)
				}
				w.trk.channels = int(binary.BigEndian.Uint32(e[48:52]))
			}
		}
		if children < len(e) {
			w.esds(e[children:], 0)
		}
	}
}

func (w *bmff) endTrack() error {
	t := w.trk
	w.facts.Tracks++
	if t.hasChunks && t.lastChunk >= uint64(w.s.size) {
		return incomplete(w.facts.Container, CodeChunkPastEnd, "the media data ends before the last sample of a %s track", handlerName(t.handler))
	}
	switch t.handler {
	case "vide":
		if w.facts.Video != nil {
			return nil
		}
		v := &Video{Codec: codecName(t.codec), Width: t.width, Height: t.height}
		switch {
		case t.sttsCount >= 1 && t.sttsCount <= maxRead/8-1 && t.sttsDelta > 0:
			v.FrameRate = float64(t.timescale) / float64(t.sttsDelta)
		case t.duration > 0 && t.samples > 0:
			v.FrameRate = float64(t.samples) * float64(t.timescale) / float64(t.duration)
		}
		v.FrameRate = math.Round(v.FrameRate*1000) / 1000
		if v.FrameRate > 1e6 || math.IsNaN(v.FrameRate) || math.IsInf(v.FrameRate, 0) {
			v.FrameRate = 0
		}
		w.facts.Video = v
	case "soun":
		if w.facts.Audio != nil {
			return nil
		}
		w.facts.Audio = &Audio{Codec: codecName(t.codec), Channels: t.channels, SampleRate: t.sampleRate}
	}
	if w.facts.Duration == 0 && t.timescale > 0 {
		w.facts.Duration = durationOf(t.duration, uint64(t.timescale))
	}
	return nil
}

func handlerName(h string) string {
	switch h {
	case "vide":
		return "video"
	case "soun":
		return "audio"
	}
	return "data"
}

// codecName maps the common sample entry types to the names editors and
// ffprobe use; others are reported as their four characters.
func codecName(fourcc string) string {
	switch fourcc {
	case "avc1", "avc3":
		return "h264"
	case "hvc1", "hev1":
		return "hevc"
	case "av01":
		return "av1"
	case "vp09":
		return "vp9"
	case "mp4v":
		return "mpeg4"
	case "apch", "apcn", "apcs", "apco", "ap4h", "ap4x":
		return "prores"
	case "AVdn", "AVdh":
		return "dnxhd"
	case "mp4a":
		return "aac"
	case ".mp3":
		return "mp3"
	case "ac-3":
		return "ac3"
	case "ec-3":
		return "eac3"
	case "Opus":
		return "opus"
	case "fLaC":
		return "flac"
	case "alac":
		return "alac"
	case "lpcm", "sowt", "twos", "in24", "in32", "fl32", "fl64", "ipcm", "fpcm":
		return "pcm"
	}
	return strings.TrimSpace(printable(fourcc))
}

// esds finds the MPEG-4 elementary stream descriptor among the sample
// entry's children (in QuickTime, inside a 'wave' box) and reads the
// decoder's audio configuration: the channel count the entry's fixed
// field does not give reliably (writers put 2 there for any layout).
func (w *bmff) esds(p []byte, depth int) {
	for len(p) >= 8 {
		n := int(binary.BigEndian.Uint32(p[0:4]))
		if n < 8 || n > len(p) {
			return
		}
		typ, body := string(p[4:8]), p[8:n]
		switch {
		case typ == "wave" && depth == 0:
			w.esds(body, 1)
		case typ == "esds" && len(body) > 4:
			w.audioConfig(body[4:])
		}
		p = p[n:]
	}
}

// audioConfig walks ES_Descriptor -> DecoderConfigDescriptor ->
// DecoderSpecificInfo (ISO/IEC 14496-1) and reads the AudioSpecificConfig.
func (w *bmff) audioConfig(p []byte) {
	desc := func(p []byte) (tag byte, body, rest []byte, ok bool) {
		if len(p) < 2 {
			return 0, nil, nil, false
		}
		tag, p = p[0], p[1:]
		n := 0
		for i := 0; i < 4; i++ {
			if len(p) == 0 {
				return 0, nil, nil, false
			}
			c := p[0]
			p = p[1:]
			n = n<<7 | int(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
		if n > len(p) {
			return 0, nil, nil, false
		}
		return tag, p[:n], p[n:], true
	}
	tag, es, _, ok := desc(p)
	if !ok || tag != 0x03 || len(es) < 3 {
		return
	}
	flags := es[2]
	es = es[3:]
	if flags&0x80 != 0 { // stream dependence
		es = es[min(2, len(es)):]
	}
	if flags&0x40 != 0 && len(es) > 0 { // URL
		es = es[min(1+int(es[0]), len(es)):]
	}
	if flags&0x20 != 0 { // OCR stream
		es = es[min(2, len(es)):]
	}
	tag, dc, _, ok := desc(es)
	if !ok || tag != 0x04 || len(dc) < 13 {
		return
	}
	switch dc[0] { // objectTypeIndication
	case 0x69, 0x6b:
		w.trk.codec = ".mp3"
		return
	case 0x40, 0x66, 0x67, 0x68:
	default:
		return
	}
	tag, asc, _, ok := desc(dc[13:])
	if !ok || tag != 0x05 || len(asc) < 2 {
		return
	}
	// 5 bits object type (31: 6 more), 4 bits frequency index (15: 24
	// explicit bits), 4 bits channel configuration.
	var bits uint64
	for i := 0; i < min(len(asc), 8); i++ {
		bits |= uint64(asc[i]) << (56 - 8*i)
	}
	pos := 5
	if bits>>59 == 31 {
		pos += 6
	}
	freq := (bits >> (64 - pos - 4)) & 0xf
	pos += 4
	if freq == 15 {
		pos += 24
	}
	if pos+4 > 8*min(len(asc), 8) {
		return
	}
	if ch := int((bits >> (64 - pos - 4)) & 0xf); ch >= 1 && ch <= 7 {
		w.trk.channels = []int{0, 1, 2, 3, 4, 5, 6, 8}[ch]
	}
}
