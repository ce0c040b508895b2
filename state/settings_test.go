package state

import (
	"context"
	"path/filepath"
	"testing"
)

// Settings are kept beside the jobs and survive a reopen; an unknown name
// reads as nil.
func TestSettingsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := st.Setting(ctx, "streams/archive"); err != nil || v != nil {
		t.Fatalf("unset setting = %q, %v; want nil", v, err)
	}
	if err := st.SetSetting(ctx, "streams/archive", []byte("16")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, err := st.Setting(ctx, "streams/archive"); err != nil || string(v) != "16" {
		t.Fatalf("setting after reopen = %q, %v; want 16", v, err)
	}
	if problems, err := st.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check with a setting stored: %v %v", problems, err)
	}
}
