package daemon

import (
	"testing"

	"github.com/watchfolder/watchfolder/uploader"
)

// The parts-in-flight level a destination learned is kept across a
// restart: the first upload after it starts there instead of probing
// from the bottom again.
func TestLearnedStreamsSurviveARestart(t *testing.T) {
	h := newHarness(t, hopts{})
	learner := func() uploader.StreamLearner {
		t.Helper()
		l, ok := h.d.rt.Load().dests["archive"].(uploader.StreamLearner)
		if !ok {
			t.Fatal("the s3 destination does not report what it learned")
		}
		return l
	}
	if n := learner().LearnedStreams(); n != 0 {
		t.Fatalf("a fresh state starts with %d learned streams, want 0", n)
	}
	learner().SetLearnedStreams(8)
	h.stop()
	h.start()
	defer h.stop()
	if n := learner().LearnedStreams(); n != 8 {
		t.Fatalf("after a restart the destination starts at %d streams, want the 8 learned before", n)
	}
}
