package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
)

// bbolt's on-disk meta page, read here without bbolt so that a damaged
// file is refused before bbolt sees it: bbolt initialises a zero-byte file
// as a new, empty database (the daemon would start with no history), and
// it trusts a meta page whose high-water mark lies beyond the end of a
// truncated file.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	pageHeaderSize  = 16 // id u64, flags u16, count u16, overflow u32
	metaChecksumOff = 56 // magic, version, page size, flags, root (16), freelist, pgid, txid
	metaSize        = metaChecksumOff + 8
)

// recoverHint is how every refusal of a damaged file ends.
const recoverHint = "refusing to open it rather than start with an empty history. " +
	"Run `watchfolder db check` for details, then restore the newest backup " +
	"(`watchfolder db backup FILE` makes one while the daemon runs) over it, " +
	"or move it aside to start with a new, empty database"

type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages in use
	txid     uint64
}

// parseMeta reads the meta at the start of page p; ok is false when it is
// not a valid meta page (wrong magic, version or checksum).
func parseMeta(p []byte) (boltMeta, bool) {
	if len(p) < pageHeaderSize+metaSize {
		return boltMeta{}, false
	}
	m := p[pageHeaderSize : pageHeaderSize+metaSize]
	if binary.NativeEndian.Uint32(m[0:]) != boltMagic || binary.NativeEndian.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(m[:metaChecksumOff])
	if binary.NativeEndian.Uint64(m[metaChecksumOff:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: binary.NativeEndian.Uint32(m[8:]),
		pgid:     binary.NativeEndian.Uint64(m[40:]),
		txid:     binary.NativeEndian.Uint64(m[48:]),
	}, true
}

// checkFile refuses a database file that exists but cannot hold a
// database: empty, shorter than its two meta pages, or shorter than the
// pages its newest valid meta says are in use. A missing file is fine (a
// read-write open creates it); a file with no valid meta page at all is
// left to bbolt, which reports it as invalid.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open state database %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open state database %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, path)
	}
	size := fi.Size()
	if size == 0 {
		return fmt.Errorf("%w: %s is empty (0 bytes): it was truncated, or the first start was interrupted; %s",
			ErrCorrupt, path, recoverHint)
	}
	first := make([]byte, 4096)
	n, err := f.ReadAt(first, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read state database %s: %w", path, err)
	}
	m0, ok0 := parseMeta(first[:n])
	pageSize := int64(m0.pageSize)
	if !ok0 || pageSize < 512 || pageSize > 1<<16 {
		pageSize = int64(os.Getpagesize())
	}
	if size < 2*pageSize {
		return fmt.Errorf("%w: %s is truncated (%d bytes, shorter than its two %d-byte header pages); %s",
			ErrCorrupt, path, size, pageSize, recoverHint)
	}
	second := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(second, pageSize); err != nil {
		return fmt.Errorf("read state database %s: %w", path, err)
	}
	m1, ok1 := parseMeta(second)
	var m boltMeta
	switch {
	case ok0 && ok1:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case ok0:
		m = m0
	case ok1:
		m = m1
	default:
		return nil // bbolt says what is wrong with it
	}
	if need := int64(m.pgid) * int64(m.pageSize); need > size {
		return fmt.Errorf("%w: %s is truncated (%d bytes, its header says %d bytes are in use); %s",
			ErrCorrupt, path, size, need, recoverHint)
	}
	return nil
}
