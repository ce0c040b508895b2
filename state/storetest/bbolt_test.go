package storetest_test

import (
	"path/filepath"
	"testing"

	"github.com/watchfolder/watchfolder/state"
	"github.com/watchfolder/watchfolder/state/storetest"
)

func TestBbolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
