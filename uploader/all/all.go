// Package all lists every destination type, one line each. Adding a
// destination type is its own package plus one line here.
package all

import (
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/bluebillywig"
	"github.com/watchfolder/watchfolder/uploader/jwplayer"
	"github.com/watchfolder/watchfolder/uploader/s3engine"
	"github.com/watchfolder/watchfolder/uploader/skylark"
	"github.com/watchfolder/watchfolder/uploader/wistia"
)

// Types returns the destination types, in the order `check` lists them.
func Types() []uploader.DestinationType {
	return []uploader.DestinationType{
		s3engine.DeclareS3(),
		bluebillywig.Declare(),
		jwplayer.Declare(),
		wistia.Declare(),
		skylark.Declare(),
	}
}
