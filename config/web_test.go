package config

import (
	"strings"
	"testing"
	"time"
)

func TestWebSection(t *testing.T) {
	for _, tc := range []struct {
		name, web string
		err       string // "" when valid
		check     func(*testing.T, Web)
	}{
		{name: "off by default", web: "", check: func(t *testing.T, w Web) {
			if w.Listen != "" || w.SessionTTL != 12*time.Hour {
				t.Errorf("%+v", w)
			}
		}},
		{name: "loopback needs no access control", web: `[web]
listen = "127.0.0.1:8080"`, check: func(t *testing.T, w Web) {
			if !w.Loopback() {
				t.Error("127.0.0.1 is not loopback?")
			}
		}},
		{name: "reachable without access control", web: `[web]
listen = "0.0.0.0:8080"`, err: "web.listen: \"0.0.0.0:8080\" is reachable from other machines"},
		{name: "empty host is every interface", web: `[web]
listen = ":8080"`, err: "web.listen:"},
		{name: "users file", web: `[web]
listen = "0.0.0.0:8080"
users_file = "/etc/watchfolder/web.htpasswd"`},
		{name: "relative users file", web: `[web]
listen = "127.0.0.1:8080"
users_file = "web.htpasswd"`, err: "web.users_file:"},
		{name: "proxy", web: `[web]
listen = "0.0.0.0:8080"
trusted_proxy_header = "X-Forwarded-User"
trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "::1"]
proxy_operators = ["olga"]`, check: func(t *testing.T, w Web) {
			if len(w.TrustedProxies) != 3 || w.TrustedProxies[1].String() != "192.0.2.7/32" || w.ProxyOperators[0] != "olga" {
				t.Errorf("%+v", w)
			}
		}},
		{name: "proxy header without proxies", web: `[web]
listen = "0.0.0.0:8080"
trusted_proxy_header = "X-Forwarded-User"`, err: "web.trusted_proxies: required"},
		{name: "bad proxy address", web: `[web]
trusted_proxy_header = "X-User"
trusted_proxies = ["10.0.0.300"]`, err: "web.trusted_proxies: \"10.0.0.300\""},
		{name: "bad listen", web: `[web]
listen = "8080"`, err: "web.listen:"},
		{name: "media links", web: `[web.media_links]
jw = "https://dashboard.example/p/{site_id}/media/{id}"`, check: func(t *testing.T, w Web) {
			if w.MediaLinks["jw"] == "" {
				t.Errorf("%+v", w)
			}
		}},
		{name: "media link without id", web: `[web.media_links]
jw = "https://dashboard.example/"`, err: "web.media_links.jw:"},
		{name: "media link not http", web: `[web.media_links]
jw = "javascript:alert({id})"`, err: "web.media_links.jw:"},
		{name: "unknown key", web: `[web]
listn = "127.0.0.1:1"`, err: "web.listn: unknown key (did you mean listen?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(minimal+"\n"+tc.web+"\n"), "t.toml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c.Web)
			}
			// The effective config parses back to the same section.
			var b strings.Builder
			if err := c.WriteEffective(&b); err != nil {
				t.Fatal(err)
			}
			again, err := Parse([]byte(b.String()), "effective")
			if err != nil {
				t.Fatalf("effective config: %v\n%s", err, b.String())
			}
			if again.Web.Listen != c.Web.Listen || len(again.Web.TrustedProxies) != len(c.Web.TrustedProxies) ||
				len(again.Web.MediaLinks) != len(c.Web.MediaLinks) || again.Web.SessionTTL != c.Web.SessionTTL {
				t.Errorf("effective web %+v, want %+v", again.Web, c.Web)
			}
		})
	}
}
