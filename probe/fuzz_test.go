package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
)

// boundedReader fails the test on any read larger than the probe's bound,
// so a walker that sized a read from a length field is caught at once.
type boundedReader struct {
	t testing.TB
	r *bytes.Reader
}

func (b boundedReader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > maxRead {
		b.t.Fatalf("read of %d bytes at %d exceeds the bound %d", len(p), off, maxRead)
	}
	return b.r.ReadAt(p, off)
}

// FuzzReader runs every walker on arbitrary bytes: no panic, no unbounded
// read, and an answer that is either facts or an error, never both wrong.
// Seeds (testdata/fuzz/FuzzReader) are small real files made by ffmpeg
// and hand-built boxes.
func FuzzReader(f *testing.F) {
	f.Add(cat(ftyp("isom"), mkbox("moov", cat(mvhd0(1000, 2500), videoTrak(1920, 1080, 25000, 1000, 62, 16))), mkbox("mdat", make([]byte, 64))))
	f.Add(cat(ftyp("qt  "), largebox("mdat", nil), mkbox("moov", mvhd1(600, 1200))))
	f.Add(wavBytes(2, 48000, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := boundedReader{t: t, r: bytes.NewReader(data)}
		size := int64(len(data))
		facts, err := Reader(context.Background(), r, size)
		var pe *Error
		if err != nil && !errors.As(err, &pe) {
			t.Fatalf("a non-probe error from in-memory input: %v", err)
		}
		if err == nil && facts.Container == "" {
			t.Fatal("no container named on success")
		}
		if facts.Duration < 0 {
			t.Fatalf("negative duration %v", facts.Duration)
		}
		// Each walker directly, whatever the first bytes say.
		for _, walk := range []func(*src) (Facts, error){walkBMFF, walkMXF, walkWAV} {
			s := &src{r: r, size: size, ctx: context.Background()}
			if _, err := walk(s); err != nil && !errors.As(err, &pe) {
				t.Fatalf("a non-probe error from in-memory input: %v", err)
			}
		}
	})
}

func wavBytes(channels, rate, dataBytes int) []byte {
	fmtc := make([]byte, 16)
	binary.LittleEndian.PutUint16(fmtc[0:], 1)
	binary.LittleEndian.PutUint16(fmtc[2:], uint16(channels))
	binary.LittleEndian.PutUint32(fmtc[4:], uint32(rate))
	binary.LittleEndian.PutUint32(fmtc[8:], uint32(rate*channels*2))
	binary.LittleEndian.PutUint16(fmtc[12:], uint16(channels*2))
	binary.LittleEndian.PutUint16(fmtc[14:], 16)
	chunk := func(id string, b []byte) []byte {
		return append(binary.LittleEndian.AppendUint32([]byte(id), uint32(len(b))), b...)
	}
	body := cat([]byte("WAVE"), chunk("fmt ", fmtc), chunk("data", make([]byte, dataBytes)))
	return cat(binary.LittleEndian.AppendUint32([]byte("RIFF"), uint32(len(body))), body)
}

// hostile inputs whose length fields claim enormous sizes: the probe must
// answer with a few kilobytes of memory, whatever they say.
func hostileInputs() map[string][]byte {
	huge := func(typ string) []byte {
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = append(b, typ...)
		return binary.BigEndian.AppendUint64(b, 1<<62)
	}
	stco := binary.BigEndian.AppendUint32(make([]byte, 4), 0xffffffff)
	mxfHeader := func(footer uint64, headerBytes uint64) []byte {
		v := make([]byte, 88)
		binary.BigEndian.PutUint64(v[24:], footer)
		binary.BigEndian.PutUint64(v[32:], headerBytes)
		k := []byte{0x06, 0x0e, 0x2b, 0x34, 0x02, 0x05, 0x01, 0x01, 0x0d, 0x01, 0x02, 0x01, 0x01, 0x02, 0x04, 0x00}
		return cat(k, []byte{0x83, 0, 0, 88}, v)
	}
	// A local set claiming a 2^56-byte value right after the header.
	bigSet := cat([]byte{0x06, 0x0e, 0x2b, 0x34, 0x02, 0x53, 0x01, 0x01, 0x0d, 0x01, 0x01, 0x01, 0x01, 0x01, 0x3b, 0x00}, []byte{0x88, 1, 0, 0, 0, 0, 0, 0, 0})
	return map[string][]byte{
		"mp4 largesize 2^62":   cat(ftyp("isom"), huge("mdat")),
		"moov largesize 2^62":  cat(ftyp("isom"), huge("moov")),
		"stco 4G entries":      cat(ftyp("isom"), mkbox("moov", cat(mvhd0(1, 1), mkbox("trak", mkbox("mdia", mkbox("minf", mkbox("stbl", mkbox("stco", stco)))))))),
		"mxf footer at 2^62":   mxfHeader(1<<62, 1<<62),
		"mxf metadata 2^56":    cat(mxfHeader(0, 1<<40), bigSet),
		"wav riff 4G":          append([]byte("RIFF\xff\xff\xff\xffWAVE"), make([]byte, 64)...),
		"rf64 ds64 2^62":       append([]byte("RF64\xff\xff\xff\xffWAVEds64\x1c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x40"), make([]byte, 64)...),
		"ten thousand boxes":   cat(ftyp("isom"), bytes.Repeat(mkbox("free", nil), 10000)),
		"deeply nested traks":  cat(ftyp("isom"), mkbox("moov", cat(mvhd0(1, 1), nest(200)))),
		"mxf ten thousand KLV": cat(mxfHeader(0, 1<<30), bytes.Repeat(cat([]byte{0x06, 0x0e, 0x2b, 0x34, 0x02, 0x53, 0x01, 0x01, 0x0d, 0x01, 0x01, 0x01, 0x01, 0x01, 0x0f, 0x00}, []byte{0}), 10000)),
	}
}

// nest builds trak/mdia/minf/stbl boxes inside each other n levels deep;
// only the known path is descended, so depth stays bounded.
func nest(n int) []byte {
	b := mkbox("stbl", nil)
	for i := range n {
		b = mkbox([]string{"trak", "mdia", "minf", "stbl"}[i%4], b)
	}
	return b
}

func TestHostileInputsUseBoundedMemory(t *testing.T) {
	for name, data := range hostileInputs() {
		t.Run(name, func(t *testing.T) {
			r := boundedReader{t: t, r: bytes.NewReader(data)}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			const runs = 10
			for range runs {
				_, err := Reader(context.Background(), r, int64(len(data)))
				var pe *Error
				if err != nil && !errors.As(err, &pe) {
					t.Fatalf("non-probe error: %v", err)
				}
			}
			runtime.ReadMemStats(&after)
			perRun := (after.TotalAlloc - before.TotalAlloc) / runs
			// The 4 KiB read buffer, a few small values, the MXF set maps:
			// far below anything a length field could ask for.
			if perRun > 256<<10 {
				t.Fatalf("%d bytes allocated per probe, want < 256 KiB", perRun)
			}
		})
	}
}

// A reader that fails: the error comes back wrapped, not as a probe verdict.
type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, fmt.Errorf("disk on fire") }

func TestReadErrorsAreNotVerdicts(t *testing.T) {
	_, err := Reader(context.Background(), failingReader{}, 1000)
	var pe *Error
	if err == nil || errors.As(err, &pe) || errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want the read error", err)
	}
}
