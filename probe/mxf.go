package probe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// MXF (SMPTE ST 377-1) is a sequence of KLV triplets: a 16-byte SMPTE
// Universal Label, a BER length, the value. A finished file has a header
// partition pack at the start (after an optional run-in of up to 64 KiB),
// and a footer partition pack, closed and complete, near the end; the
// optional Random Index Pack (RIP) closing the file lists every partition.

var (
	ulPrefix        = []byte{0x06, 0x0e, 0x2b, 0x34}
	partitionPrefix = []byte{0x06, 0x0e, 0x2b, 0x34, 0x02, 0x05, 0x01} // byte 7: registry version
	partitionMid    = []byte{0x0d, 0x01, 0x02, 0x01, 0x01}             // bytes 8..12
)

// Partition kinds (key byte 13) and statuses (key byte 14).
const (
	kindHeader = 0x02
	kindBody   = 0x03
	kindFooter = 0x04
	kindRIP    = 0x11

	statusClosedComplete = 0x04
)

// maxRunIn is the largest run-in SMPTE 377 allows before the header.
const maxRunIn = 65536

// maxMetadata bounds the header metadata walked for facts.
const maxMetadata = 16 << 20

func isPartitionPrefix(k []byte) bool {
	return len(k) >= 16 && bytes.Equal(k[:7], partitionPrefix) && bytes.Equal(k[8:13], partitionMid) &&
		k[13] >= kindHeader && k[13] <= kindFooter
}

func isRIPKey(k []byte) bool {
	return len(k) >= 16 && bytes.Equal(k[:7], partitionPrefix) && bytes.Equal(k[8:13], partitionMid) && k[13] == kindRIP
}

// isFill reports a KLV fill item (06.0E.2B.34.01.01.01.xx.03.01.02.10...).
func isFill(k []byte) bool {
	return len(k) >= 16 && bytes.Equal(k[:4], ulPrefix) && k[4] == 0x01 && k[5] == 0x01 && k[6] == 0x01 &&
		k[8] == 0x03 && k[9] == 0x01 && k[10] == 0x02 && k[11] == 0x10
}

type klv struct {
	key [16]byte
	off int64 // start of the key
	hdr int64 // key + BER length
	len int64 // value length
}

func (k klv) value() int64 { return k.off + k.hdr }
func (k klv) end() int64   { return k.off + k.hdr + k.len }

// klvAt reads the key and length at off, within [off, end). A triplet whose
// value runs past end is returned as is.
func (s *src) klvAt(off, end int64) (klv, error) {
	if end-off < 17 {
		return klv{}, errShortHeader
	}
	h, err := s.read(off, min(25, end-off))
	if err != nil {
		return klv{}, err
	}
	var k klv
	k.off = off
	copy(k.key[:], h[:16])
	if !bytes.Equal(h[:4], ulPrefix) {
		return k, errBadType
	}
	b := h[16]
	if b < 0x80 {
		k.hdr, k.len = 17, int64(b)
		return k, nil
	}
	n := int(b & 0x7f)
	if n == 0 || n > 8 {
		return k, errSmallBox
	}
	if len(h) < 17+n {
		return k, errShortHeader
	}
	var v uint64
	for _, c := range h[17 : 17+n] {
		v = v<<8 | uint64(c)
	}
	if v > math.MaxInt64/2 {
		return k, errSmallBox
	}
	k.hdr, k.len = int64(17+n), int64(v)
	return k, nil
}

type partition struct {
	kind, status byte
	this, footer uint64
	headerBytes  uint64
	op           [16]byte
}

// partitionAt reads the partition pack at off.
func (s *src) partitionAt(k klv) (partition, bool) {
	p := partition{kind: k.key[13], status: k.key[14]}
	if k.len < 88 || k.len > s.size-k.value() {
		return p, false
	}
	v, err := s.read(k.value(), 88)
	if err != nil {
		return p, false
	}
	p.this = binary.BigEndian.Uint64(v[8:16])
	p.footer = binary.BigEndian.Uint64(v[24:32])
	p.headerBytes = binary.BigEndian.Uint64(v[32:40])
	copy(p.op[:], v[64:80])
	return p, true
}

type mxf struct {
	s     *src
	facts Facts
	base  int64 // run-in length: partition offsets count from here
}

func walkMXF(s *src) (Facts, error) {
	m := &mxf{s: s, facts: Facts{Container: MXF}}
	base, err := m.findHeader()
	if err != nil {
		return m.facts, err
	}
	m.base = base
	hk, err := s.klvAt(base, s.size)
	if err != nil && !errors.Is(err, errShortHeader) {
		return m.facts, ioOr(err, damaged(MXF, CodeBadPartition, "the header partition pack is not valid"))
	}
	if err != nil {
		return m.facts, incomplete(MXF, CodeTruncated, "the file ends inside the header partition")
	}
	hp, ok := s.partitionAt(hk)
	if !ok {
		if hk.end() > s.size {
			return m.facts, incomplete(MXF, CodeTruncated, "the file ends inside the header partition")
		}
		return m.facts, damaged(MXF, CodeBadPartition, "the header partition pack is not valid")
	}
	m.facts.Pattern = opName(hp.op)

	footer, err := m.findFooter(hp)
	if err != nil {
		return m.facts, err
	}
	if err := m.checkFooter(footer); err != nil {
		return m.facts, err
	}
	if err := m.metadata(hk, hp); err != nil {
		return m.facts, err
	}
	m.facts.Checked = true
	return m.facts, nil
}

// ioOr returns err when it is a read error, else the content error.
func ioOr(err error, content *Error) error {
	if errors.Is(err, errShortHeader) || errors.Is(err, errBadType) || errors.Is(err, errSmallBox) {
		return content
	}
	return err
}

// findHeader returns the offset of the header partition pack: 0, or after
// a run-in of less than 64 KiB.
func (m *mxf) findHeader() (int64, error) {
	limit := min(m.s.size, maxRunIn+16)
	const step = maxRead - 16
	for off := int64(0); off < limit; off += step {
		b, err := m.s.read(off, min(maxRead, m.s.size-off))
		if err != nil {
			return 0, err
		}
		for i := 0; i+16 <= len(b) && off+int64(i) < maxRunIn; i++ {
			if b[i] == 0x06 && isPartitionPrefix(b[i:]) && b[i+13] == kindHeader {
				return off + int64(i), nil
			}
		}
		if int64(len(b)) < maxRead {
			break
		}
	}
	return 0, damaged(MXF, CodeNoHeader, "no MXF header partition at the start of the file")
}

// findFooter returns the absolute offset of the footer partition pack,
// from the header partition pack or else from the Random Index Pack.
func (m *mxf) findFooter(hp partition) (int64, error) {
	if hp.footer != 0 {
		return m.inFile(hp.footer, "the header partition")
	}
	if off, ok, err := m.ripFooter(); err != nil || ok {
		return off, err
	}
	return 0, incomplete(MXF, CodeNoFooter, "no footer partition (the writer did not finish the file)")
}

// inFile turns a partition offset into an absolute one, failing when it
// lies past the end of the file.
func (m *mxf) inFile(rel uint64, from string) (int64, error) {
	if rel > uint64(math.MaxInt64-m.base) || int64(rel)+m.base >= m.s.size {
		return 0, incomplete(MXF, CodeFooterPastEnd, "the file ends at byte %d, before its footer partition (at byte %d according to %s)", m.s.size, rel+uint64(m.base), from)
	}
	return int64(rel) + m.base, nil
}

// ripFooter reads the Random Index Pack at the end of the file, if there is
// one, and returns the offset of the last partition it lists.
func (m *mxf) ripFooter() (int64, bool, error) {
	if m.s.size-m.base < 16+1+12+4 {
		return 0, false, nil
	}
	t, err := m.s.read(m.s.size-4, 4)
	if err != nil {
		return 0, false, err
	}
	n := int64(binary.BigEndian.Uint32(t))
	if n < 16+1+12+4 || n > m.s.size-m.base {
		return 0, false, nil
	}
	k, err := m.s.klvAt(m.s.size-n, m.s.size)
	if err != nil || !isRIPKey(k.key[:]) || k.end() != m.s.size {
		return 0, false, nil
	}
	// The value is (BodySID uint32, ByteOffset uint64) pairs then the
	// length; partitions are listed in file order, the footer last.
	if (k.len-4)%12 != 0 {
		return 0, false, nil
	}
	last, err := m.s.read(m.s.size-4-8, 8)
	if err != nil {
		return 0, false, err
	}
	off, err := m.inFile(binary.BigEndian.Uint64(last), "the random index pack")
	return off, err == nil, err
}

// checkFooter checks the footer partition pack and that the KLVs after it
// (header metadata copy, index, RIP) end exactly at the end of the file.
func (m *mxf) checkFooter(at int64) error {
	fk, err := m.s.klvAt(at, m.s.size)
	if errors.Is(err, errShortHeader) {
		return incomplete(MXF, CodeTruncated, "the file ends inside the footer partition")
	}
	if err != nil || !isPartitionPrefix(fk.key[:]) || fk.key[13] != kindFooter {
		return ioOr(err, damaged(MXF, CodeBadPartition, "the footer partition offset (byte %d) does not point at a footer partition pack", at))
	}
	if fk.end() > m.s.size {
		return incomplete(MXF, CodeTruncated, "the file ends inside the footer partition")
	}
	fp, ok := m.s.partitionAt(fk)
	if !ok {
		return damaged(MXF, CodeBadPartition, "the footer partition pack is not valid")
	}
	if fp.status != statusClosedComplete {
		return incomplete(MXF, CodeFooterOpen, "the footer partition is not closed and complete (%s)", statusName(fp.status))
	}
	off := fk.end()
	for n := 0; off < m.s.size; n++ {
		if n >= maxNested {
			return nil // enough evidence; a real footer has far fewer
		}
		k, err := m.s.klvAt(off, m.s.size)
		if errors.Is(err, errShortHeader) {
			return incomplete(MXF, CodeTruncated, "the file ends inside the footer partition")
		}
		if err != nil {
			return ioOr(err, damaged(MXF, CodeTrailing, "%d bytes after byte %d, in the footer partition, are not MXF", m.s.size-off, off))
		}
		if k.len > m.s.size-k.value() {
			return incomplete(MXF, CodeTruncated, "the file ends inside the footer partition")
		}
		off = k.end()
	}
	return nil
}

func statusName(s byte) string {
	switch s {
	case 0x01:
		return "open and incomplete"
	case 0x02:
		return "closed but incomplete"
	case 0x03:
		return "open but complete"
	}
	return fmt.Sprintf("status %d", s)
}

// opName names the operational pattern UL: OP1a..OP3c, OP-Atom.
func opName(ul [16]byte) string {
	if !bytes.Equal(ul[:4], ulPrefix) || ul[8] != 0x0d || ul[9] != 0x01 || ul[10] != 0x02 || ul[11] != 0x01 {
		return ""
	}
	switch item, pkg := ul[12], ul[13]; {
	case item == 0x10:
		return "OPAtom"
	case item >= 1 && item <= 3 && pkg >= 1 && pkg <= 3:
		return fmt.Sprintf("OP%d%c", item, 'a'+pkg-1)
	}
	return ""
}

// Header metadata: local sets (key byte 5 = 0x53) of 2-byte tag, 2-byte
// length items. The tags read here are static (SMPTE 377 Annex), so the
// primer pack is not needed.
const (
	tagInstanceUID   = 0x3c0a
	tagDataDef       = 0x0201
	tagDuration      = 0x0202
	tagEditRate      = 0x4b01
	tagSequence      = 0x4803
	tagSampleRate    = 0x3001
	tagPictureCoding = 0x3201
	tagStoredHeight  = 0x3202
	tagStoredWidth   = 0x3203
	tagDisplayHeight = 0x3208
	tagDisplayWidth  = 0x3209
	tagFrameLayout   = 0x320c
	tagAudioRate     = 0x3d03
	tagChannels      = 0x3d07
)

type mxfTrack struct {
	num, den uint32
	seq      [16]byte
}

type mxfSeq struct {
	duration int64
	essence  bool // picture or sound, not timecode or data
}

// metadata walks the header partition's metadata for duration and the
// picture and sound descriptors. A problem here is not a failure: the
// structure check is done; facts are best effort.
func (m *mxf) metadata(hk klv, hp partition) error {
	// HeaderByteCount counts from the primer pack, after any fill that
	// aligns the partition pack to the KAG.
	off := hk.end()
	for range 4 {
		k, err := m.s.klvAt(off, m.s.size)
		if err != nil || !isFill(k.key[:]) {
			break
		}
		off = k.end()
	}
	end := min(off+int64(min(hp.headerBytes, maxMetadata)), m.s.size)
	var tracks []mxfTrack
	seqs := map[[16]byte]mxfSeq{}
	for n := 0; off < end && n < maxNested; n++ {
		k, err := m.s.klvAt(off, end)
		if errors.Is(err, errShortHeader) || errors.Is(err, errBadType) || errors.Is(err, errSmallBox) {
			break
		}
		if err != nil {
			return err
		}
		if k.len > end-k.value() {
			break
		}
		if k.key[4] == 0x02 && k.key[5] == 0x53 && k.len <= maxRead {
			v, err := m.s.read(k.value(), k.len)
			if err != nil {
				return err
			}
			m.set(k.key, v, &tracks, seqs)
		}
		off = k.end()
	}
	var best, any time.Duration
	for _, t := range tracks {
		sq, ok := seqs[t.seq]
		if !ok || sq.duration <= 0 || t.num == 0 || t.den == 0 {
			continue
		}
		d := durationOf(uint64(sq.duration)*uint64(t.den), uint64(t.num))
		if sq.essence {
			best = max(best, d)
		}
		any = max(any, d)
	}
	if best == 0 {
		best = any
	}
	m.facts.Duration = best
	return nil
}

// set reads one local set. len(tracks) and len(seqs) are bounded by the
// number of KLVs walked (maxNested).
func (m *mxf) set(key [16]byte, v []byte, tracks *[]mxfTrack, seqs map[[16]byte]mxfSeq) {
	items := map[uint16][]byte{}
	for len(v) >= 4 {
		tag := binary.BigEndian.Uint16(v[0:2])
		n := int(binary.BigEndian.Uint16(v[2:4]))
		if 4+n > len(v) {
			break
		}
		items[tag] = v[4 : 4+n]
		v = v[4+n:]
	}
	u32 := func(b []byte) (uint32, bool) {
		if len(b) != 4 {
			return 0, false
		}
		return binary.BigEndian.Uint32(b), true
	}
	rational := func(b []byte) (uint32, uint32, bool) {
		if len(b) != 8 {
			return 0, 0, false
		}
		return binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8]), true
	}
	switch {
	case key[14] == 0x3b: // timeline track
		num, den, ok := rational(items[tagEditRate])
		if s := items[tagSequence]; ok && len(s) == 16 {
			t := mxfTrack{num: num, den: den}
			copy(t.seq[:], s)
			*tracks = append(*tracks, t)
		}
	case key[14] == 0x0f: // sequence
		uid, d := items[tagInstanceUID], items[tagDuration]
		if len(uid) == 16 && len(d) == 8 {
			var id [16]byte
			copy(id[:], uid)
			dd := items[tagDataDef]
			essence := len(dd) == 16 && dd[11] == 0x02 && (dd[12] == 0x01 || dd[12] == 0x02)
			seqs[id] = mxfSeq{duration: int64(binary.BigEndian.Uint64(d)), essence: essence}
		}
	}
	if w, ok := u32(items[tagStoredWidth]); ok {
		h, _ := u32(items[tagStoredHeight])
		// The display size is the picture (1080); stored may be the coded
		// size (1088 for MPEG-2).
		if dw, ok := u32(items[tagDisplayWidth]); ok && dw > 0 {
			if dh, ok := u32(items[tagDisplayHeight]); ok && dh > 0 {
				w, h = dw, dh
			}
		}
		// Interlaced layouts (separate, mixed fields, segmented frame)
		// give the height of one field.
		if fl := items[tagFrameLayout]; len(fl) == 1 && (fl[0] == 1 || fl[0] == 3 || fl[0] == 4) {
			h *= 2
		}
		m.facts.Tracks++
		if m.facts.Video == nil {
			v := &Video{Width: int(w), Height: int(h), Codec: pictureCodec(items[tagPictureCoding])}
			if num, den, ok := rational(items[tagSampleRate]); ok && den > 0 {
				v.FrameRate = math.Round(float64(num)/float64(den)*1000) / 1000
			}
			m.facts.Video = v
		}
	} else if ch, ok := u32(items[tagChannels]); ok {
		m.facts.Tracks++
		if m.facts.Audio == nil {
			a := &Audio{Channels: int(ch)}
			if num, den, ok := rational(items[tagAudioRate]); ok && den > 0 {
				a.SampleRate = int(num / den)
			}
			if key[14] == 0x47 || key[14] == 0x48 { // AES3, WAVE
				a.Codec = "pcm"
			}
			m.facts.Audio = a
		}
	}
}

// pictureCodec names the picture essence coding UL (SMPTE RP 224).
func pictureCodec(ul []byte) string {
	if len(ul) != 16 || !bytes.Equal(ul[:4], ulPrefix) || ul[8] != 0x04 || ul[9] != 0x01 || ul[10] != 0x02 {
		return ""
	}
	switch {
	case ul[11] == 0x01:
		return "uncompressed"
	case ul[11] != 0x02:
		return ""
	case ul[12] == 0x01 && (ul[13] == 0x31 || ul[13] == 0x32):
		return "h264"
	case ul[12] == 0x01 && ul[13] == 0x20:
		return "mpeg4"
	case ul[12] == 0x01:
		return "mpeg2"
	case ul[12] == 0x02:
		return "dv"
	case ul[12] == 0x03 && ul[13] == 0x01:
		return "jpeg2000"
	case ul[12] == 0x03 && ul[13] == 0x06:
		return "prores"
	case ul[12] == 0x71:
		return "dnxhd"
	}
	return ""
}
