//go:build !linux

package watcher

import "os"

type dirStat struct{}

func newDirStat(*os.File) dirStat { return dirStat{} }

func (dirStat) regular(dir, name string) (FileInfo, bool) { return lstatRegular(dir, name) }
