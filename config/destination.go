package config

import (
	"slices"

	"github.com/watchfolder/watchfolder/config/table"
	"github.com/watchfolder/watchfolder/uploader"
	"github.com/watchfolder/watchfolder/uploader/all"
)

// destTypes returns the declared destination types by name. config reaches
// destination types only through this list.
func destTypes() (map[string]uploader.DestinationType, []string) {
	byName := map[string]uploader.DestinationType{}
	var names []string
	for _, dt := range all.Types() {
		byName[dt.Name] = dt
		names = append(names, dt.Name)
	}
	return byName, names
}

// SidecarPlatforms names the destination types whose extras a sidecar may
// give under a top-level key of the type's name.
func SidecarPlatforms() []string {
	var out []string
	for _, dt := range all.Types() {
		if dt.SidecarKey {
			out = append(out, dt.Name)
		}
	}
	return out
}

func buildDestination(name string, t *table.Table) *Destination {
	d := &Destination{Name: name}
	types, names := destTypes()
	typ, ok := t.Str("type")
	switch {
	case !ok && !t.Has("type"):
		t.Errf("type", "required: one of %s", table.QuoteList(names))
	case ok && !slices.Contains(names, typ):
		t.Errf("type", "%q is not one of %s", typ, table.QuoteList(names))
	}
	dt, known := types[typ]
	if !known {
		// Without a type nothing else can be judged; do not pile up
		// "unknown key" noise on top of the one real problem.
		return d
	}
	d.Type = typ
	d.Settings = dt.Decode(t)
	t.Unknown(func(k string) string {
		// A key that another type declares is not a typo.
		for _, other := range names {
			if other != typ && declares(types[other], k) {
				return "not a key of type " + typ
			}
		}
		return ""
	})
	return d
}

// declares reports whether destination type dt knows key k, by decoding an
// empty table of that type and looking at what it read.
func declares(dt uploader.DestinationType, k string) bool {
	p := &table.Problems{SkipSecrets: true}
	t := table.New("", map[string]any{}, p)
	dt.Decode(t)
	return slices.Contains(t.Asked(), k)
}
