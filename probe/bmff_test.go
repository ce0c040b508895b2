package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"
)

// Hand-built boxes for the cases an encoder does not produce on request.

func mkbox(typ string, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	return append(append(b, typ...), body...)
}

// largebox writes a box with size field 1 and a 64-bit size.
func largebox(typ string, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1)
	b = append(b, typ...)
	b = binary.BigEndian.AppendUint64(b, uint64(16+len(body)))
	return append(b, body...)
}

func ftyp(brand string) []byte {
	return mkbox("ftyp", append([]byte(brand+"\x00\x00\x02\x00"), "isomiso2"...))
}

func mvhd0(timescale, duration uint32) []byte {
	b := make([]byte, 100)
	binary.BigEndian.PutUint32(b[12:], timescale)
	binary.BigEndian.PutUint32(b[16:], duration)
	return mkbox("mvhd", b)
}

func mvhd1(timescale uint32, duration uint64) []byte {
	b := make([]byte, 112)
	b[0] = 1
	binary.BigEndian.PutUint32(b[20:], timescale)
	binary.BigEndian.PutUint64(b[24:], duration)
	return mkbox("mvhd", b)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func run(b []byte) (Facts, error) {
	return Reader(context.Background(), bytesReader(b), int64(len(b)))
}

// videoTrak builds a trak with tkhd, mdhd, hdlr, stsd (one visual entry),
// stts (one entry), stsz and stco.
func videoTrak(w, h uint16, timescale, delta, samples uint32, lastChunk uint32) []byte {
	tk := make([]byte, 84)
	binary.BigEndian.PutUint32(tk[76:], uint32(w)<<16)
	binary.BigEndian.PutUint32(tk[80:], uint32(h)<<16)
	md := make([]byte, 24)
	binary.BigEndian.PutUint32(md[12:], timescale)
	binary.BigEndian.PutUint32(md[16:], delta*samples)
	hd := append(make([]byte, 8), "vide"...)
	hd = append(hd, make([]byte, 13)...)
	entry := make([]byte, 78)
	binary.BigEndian.PutUint16(entry[24:], w)
	binary.BigEndian.PutUint16(entry[26:], h)
	sd := binary.BigEndian.AppendUint32(make([]byte, 4), 1)
	sd = append(sd, mkbox("avc1", entry)...)
	st := binary.BigEndian.AppendUint32(make([]byte, 4), 1)
	st = binary.BigEndian.AppendUint32(st, samples)
	st = binary.BigEndian.AppendUint32(st, delta)
	sz := binary.BigEndian.AppendUint32(make([]byte, 8), samples)
	co := binary.BigEndian.AppendUint32(make([]byte, 4), 2)
	co = binary.BigEndian.AppendUint32(co, 0)
	co = binary.BigEndian.AppendUint32(co, lastChunk)
	stbl := mkbox("stbl", cat(mkbox("stsd", sd), mkbox("stts", st), mkbox("stsz", sz), mkbox("stco", co)))
	return mkbox("trak", cat(mkbox("tkhd", tk), mkbox("mdia", cat(mkbox("mdhd", md), mkbox("hdlr", hd), mkbox("minf", stbl)))))
}

func TestBoxLayouts(t *testing.T) {
	mdat := mkbox("mdat", make([]byte, 1000))
	moov := mkbox("moov", cat(mvhd0(1000, 2500), videoTrak(1920, 1080, 25000, 1000, 62, 16)))
	tests := []struct {
		name     string
		file     []byte
		code     string // "" = passes
		dur      time.Duration
		checkVid bool
	}{
		{"moov at end", cat(ftyp("isom"), mdat, moov), "", 2500 * time.Millisecond, true},
		{"moov at front", cat(ftyp("isom"), moov, mdat), "", 2500 * time.Millisecond, true},
		{"64-bit largesize mdat", cat(ftyp("isom"), largebox("mdat", make([]byte, 100)), moov), "", 2500 * time.Millisecond, true},
		{"size 0 mdat runs to the end", cat(ftyp("isom"), moov, []byte{0, 0, 0, 0}, []byte("mdat"), make([]byte, 50)), "", 2500 * time.Millisecond, true},
		{"mvhd version 1", cat(ftyp("isom"), mkbox("moov", mvhd1(90000, 90000*4)), mdat), "", 4 * time.Second, false},
		{"no moov", cat(ftyp("isom"), mdat), CodeNoMoov, 0, false},
		{"moov without mvhd", cat(ftyp("isom"), mkbox("moov", mkbox("udta", nil)), mdat), CodeNoMvhd, 0, false},
		{"mdat past the end", cat(ftyp("isom"), moov, mdat[:500]), CodeTruncated, 0, false},
		{"largesize past the end", cat(ftyp("isom"), moov, largebox("mdat", make([]byte, 100))[:60]), CodeTruncated, 0, false},
		{"half a header at the end", cat(ftyp("isom"), moov, mdat, []byte{0, 0, 1}), CodeTruncated, 0, false},
		{"zeros after the last box", cat(ftyp("isom"), moov, mdat, make([]byte, 64)), CodeTrailing, 0, false},
		{"garbage after the last box", cat(ftyp("isom"), moov, mdat, []byte("\x00\x00\x00\x10\x01\x02\x03\x04garbage!")), CodeTrailing, 0, false},
		{"box smaller than its header", cat(ftyp("isom"), moov, []byte{0, 0, 0, 4}, []byte("free")), CodeTrailing, 0, false},
		{"child past its parent", cat(ftyp("isom"), mkbox("moov", cat(mvhd0(1000, 1000), []byte{0, 0, 1, 0}, []byte("trak"))), mdat), CodeBadBox, 0, false},
		{"chunk offset past the end", cat(ftyp("isom"), mkbox("moov", cat(mvhd0(1000, 2500), videoTrak(640, 360, 25, 1, 62, 1<<30))), mdat), CodeChunkPastEnd, 0, false},
		{"chunk table longer than its box", cat(ftyp("isom"), mkbox("moov", cat(mvhd0(1000, 1000), mkbox("trak", mkbox("mdia", mkbox("minf", mkbox("stbl", mkbox("stco", []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})))))))), CodeBadBox, 0, false},
		{"pre-ftyp QuickTime", cat(mkbox("wide", nil), mdat, moov), "", 2500 * time.Millisecond, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := run(tc.file)
			if tc.code != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tc.code {
					t.Fatalf("got %v, want code %s", err, tc.code)
				}
				return
			}
			if err != nil || !f.Checked {
				t.Fatalf("got %+v, %v; want a pass", f, err)
			}
			if f.Duration != tc.dur {
				t.Errorf("duration %v, want %v", f.Duration, tc.dur)
			}
			if tc.checkVid {
				want := Video{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 25}
				if f.Video == nil || *f.Video != want {
					t.Errorf("video %+v, want %+v", f.Video, want)
				}
			}
		})
	}
}

func TestContainerByName(t *testing.T) {
	tests := []struct {
		name  string
		data  []byte
		brand string
		code  string
	}{
		{"clip.mov", []byte("this is a text file, not a movie"), "", CodeNotContainer},
		{"clip.mxf", make([]byte, 100), "", CodeNoHeader},
		{"clip.wav", nil, "", CodeEmpty},
		{"clip.ts", []byte{0x47, 0, 0, 0}, "mpeg-ts", ""},
		{"notes.txt", []byte("hello"), Unknown, ""},
		{"take.m4a", cat(ftyp("M4A "), mkbox("moov", mvhd0(1, 1))), M4A, ""},
		{"take.mov", cat(ftyp("qt  "), mkbox("moov", mvhd0(1, 1))), MOV, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := t.TempDir() + "/" + tc.name
			if err := writeFile(p, tc.data); err != nil {
				t.Fatal(err)
			}
			f, err := File(context.Background(), p)
			if tc.code != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tc.code || pe.Incomplete && tc.code == CodeNotContainer {
					t.Fatalf("got %v, want code %s", err, tc.code)
				}
				return
			}
			if err != nil || f.Container != tc.brand {
				t.Fatalf("got %+v %v, want container %s", f, err, tc.brand)
			}
		})
	}
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }
