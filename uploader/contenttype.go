package uploader

import (
	"path"
	"strings"
)

// contentTypes maps lower-case extensions to the types platforms expect.
// A fixed table rather than mime.TypeByExtension: the system's mime.types
// differs between hosts (and lacks .mxf, .m2ts, ...), and platforms key their
// ingest on these exact values. Read-only.
var contentTypes = map[string]string{
	".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime",
	".mxf": "application/mxf", ".mkv": "video/x-matroska", ".webm": "video/webm",
	".avi": "video/x-msvideo", ".wmv": "video/x-ms-wmv", ".flv": "video/x-flv",
	".mpg": "video/mpeg", ".mpeg": "video/mpeg",
	".ts": "video/mp2t", ".m2ts": "video/mp2t", ".mts": "video/mp2t",
	".3gp": "video/3gpp", ".ogv": "video/ogg",
	".mp3": "audio/mpeg", ".wav": "audio/wav", ".aif": "audio/aiff", ".aiff": "audio/aiff",
	".m4a": "audio/mp4", ".aac": "audio/aac", ".flac": "audio/flac", ".ogg": "audio/ogg",
	".opus": "audio/opus",
	".json": "application/json", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
	".png": "image/png", ".srt": "application/x-subrip", ".vtt": "text/vtt",
}

// ContentTypeFor returns the Content-Type for a file name by its extension
// (case-insensitive), application/octet-stream when unknown.
func ContentTypeFor(name string) string {
	if t, ok := contentTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return "application/octet-stream"
}
