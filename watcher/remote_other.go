//go:build !linux

package watcher

// onNetworkFS is unknown off Linux: keep the configured rescan interval.
func onNetworkFS(string) bool { return true }
