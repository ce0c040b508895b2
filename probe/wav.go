package probe

import (
	"encoding/binary"
)

// WAV: a RIFF (or RF64/BW64 for files over 4 GiB) container of chunks. The
// RIFF size must match the file: a shorter file was cut, a longer one has
// bytes that belong to nothing.

func walkWAV(s *src) (Facts, error) {
	facts := Facts{Container: WAV}
	h, err := s.read(0, min(s.size, 12))
	if err != nil {
		return facts, err
	}
	if len(h) < 12 {
		return facts, incomplete(WAV, CodeTruncated, "the file ends inside the RIFF header")
	}
	rf64 := string(h[:4]) != "RIFF"
	riff := int64(binary.LittleEndian.Uint32(h[4:8]))
	var dataSize64 int64 = -1
	off := int64(12)
	if rf64 {
		// ds64 must be the first chunk: 64-bit RIFF and data sizes.
		if s.size < 12+8+16 {
			return facts, incomplete(WAV, CodeTruncated, "the file ends inside the RF64 header")
		}
		d, err := s.read(12, 8+16)
		if err != nil {
			return facts, err
		}
		if string(d[:4]) != "ds64" {
			return facts, damaged(WAV, CodeBadBox, "an RF64 file without its ds64 chunk")
		}
		r64 := binary.LittleEndian.Uint64(d[8:16])
		d64 := binary.LittleEndian.Uint64(d[16:24])
		if r64 > 1<<62 || d64 > 1<<62 {
			return facts, damaged(WAV, CodeBadBox, "the ds64 chunk holds impossible sizes")
		}
		riff, dataSize64 = int64(r64), int64(d64)
	}
	switch want := riff + 8; {
	case !rf64 && (riff == 0 || riff == 0xffffffff) && want != s.size:
		// A writer puts a placeholder here and the real size at the end.
		return facts, incomplete(WAV, CodeRIFFSize, "the RIFF header still holds the writer's placeholder size (the writer did not finish)")
	case want > s.size:
		return facts, incomplete(WAV, CodeRIFFSize, "the file is shorter than its RIFF header says: %d of %d bytes present", s.size, want)
	case want < s.size:
		return facts, damaged(WAV, CodeRIFFSize, "%d bytes after the end of the RIFF data", s.size-want)
	}
	var (
		haveFmt, haveData bool
		byteRate          uint32
		dataSize          int64
	)
	for n := 0; off < s.size; n++ {
		if n >= maxNested {
			break
		}
		if s.size-off < 8 {
			return facts, damaged(WAV, CodeTrailing, "%d bytes after the last chunk belong to none", s.size-off)
		}
		c, err := s.read(off, 8)
		if err != nil {
			return facts, err
		}
		id := string(c[:4])
		size := int64(binary.LittleEndian.Uint32(c[4:8]))
		if !validType(c[:4]) {
			return facts, damaged(WAV, CodeBadBox, "an invalid chunk at byte %d", off)
		}
		if id == "data" && rf64 && size == 0xffffffff && dataSize64 >= 0 {
			size = dataSize64
		}
		body := off + 8
		if size > s.size-body {
			if id == "data" {
				return facts, incomplete(WAV, CodeTruncated, "the audio data (data chunk) is cut short: %d of %d bytes present", s.size-body, size)
			}
			return facts, incomplete(WAV, CodeTruncated, "the file ends inside the '%s' chunk", printable(id))
		}
		switch id {
		case "fmt ":
			if size < 16 {
				return facts, damaged(WAV, CodeBadBox, "the format chunk (fmt) is too short")
			}
			f, err := s.read(body, 16)
			if err != nil {
				return facts, err
			}
			haveFmt = true
			tag := binary.LittleEndian.Uint16(f[0:2])
			facts.Audio = &Audio{
				Codec:      wavCodec(tag),
				Channels:   int(binary.LittleEndian.Uint16(f[2:4])),
				SampleRate: int(binary.LittleEndian.Uint32(f[4:8])),
			}
			byteRate = binary.LittleEndian.Uint32(f[8:12])
		case "data":
			haveData, dataSize = true, size
		}
		// Chunks are padded to an even length.
		next := body + size + size&1
		if next > s.size && next == s.size+1 {
			next = s.size // a missing pad byte at the very end is common
		}
		off = next
	}
	if !haveFmt {
		return facts, damaged(WAV, CodeNoFormat, "no format chunk (fmt)")
	}
	if !haveData {
		return facts, incomplete(WAV, CodeNoData, "no audio data (data chunk)")
	}
	if byteRate > 0 {
		facts.Duration = durationOf(uint64(dataSize), uint64(byteRate))
	}
	facts.Tracks = 1
	facts.Checked = true
	return facts, nil
}

func wavCodec(tag uint16) string {
	switch tag {
	case 1, 0xfffe:
		return "pcm"
	case 3:
		return "pcm_float"
	case 6:
		return "alaw"
	case 7:
		return "mulaw"
	case 0x50:
		return "mp2"
	case 0x55:
		return "mp3"
	}
	return "wav"
}
