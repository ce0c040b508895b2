package probe

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestWAVLayouts(t *testing.T) {
	good := wavBytes(2, 48000, 192000) // 1 s of 16-bit stereo
	// RIFF size right, data chunk claiming more than the file holds.
	longData := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(longData[40:], 400000)
	// RF64: sizes in ds64, 0xFFFFFFFF in the RIFF and data headers.
	rf64 := func(dataBytes int) []byte {
		w := wavBytes(2, 48000, dataBytes)
		ds := make([]byte, 28)
		binary.LittleEndian.PutUint32(ds[0:], 0)
		out := append([]byte("RF64\xff\xff\xff\xffWAVE"), append([]byte("ds64\x1c\x00\x00\x00"), ds...)...)
		out = append(out, w[12:]...)
		binary.LittleEndian.PutUint64(out[20:], uint64(len(out)-8))
		binary.LittleEndian.PutUint64(out[28:], uint64(dataBytes))
		binary.LittleEndian.PutUint32(out[len(out)-dataBytes-4:], 0xffffffff)
		return out
	}
	noData := wavBytes(1, 8000, 0)[:36]
	binary.LittleEndian.PutUint32(noData[4:], 28)
	tests := []struct {
		name string
		data []byte
		code string
		dur  time.Duration
	}{
		{"whole", good, "", time.Second},
		{"one byte extra", append(append([]byte(nil), good...), 0), CodeRIFFSize, 0},
		{"cut", good[:1000], CodeRIFFSize, 0},
		{"data past the end", longData, CodeTruncated, 0},
		{"rf64 whole", rf64(96000), "", 500 * time.Millisecond},
		{"rf64 cut", rf64(96000)[:5000], CodeRIFFSize, 0},
		{"no data chunk", noData, CodeNoData, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := run(tc.data)
			if tc.code != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tc.code {
					t.Fatalf("got %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil || f.Duration != tc.dur || f.Audio == nil || f.Audio.Channels != 2 || f.Audio.SampleRate != 48000 {
				t.Fatalf("got %+v %+v %v", f, f.Audio, err)
			}
		})
	}
}
