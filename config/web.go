package config

import (
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/watchfolder/watchfolder/config/table"
)

// Web is the [web] table: the status page served by the daemon.
type Web struct {
	// Listen is host:port; "" (the default) serves no page.
	Listen string
	// UsersFile is an htpasswd file with bcrypt entries, each optionally
	// followed by ":operator" or ":editor" (the default role).
	UsersFile string
	// TrustedProxyHeader names the header (e.g. X-Forwarded-User) in which
	// an authenticating reverse proxy passes the user; it is believed only
	// from TrustedProxies.
	TrustedProxyHeader string
	TrustedProxies     []netip.Prefix
	// ProxyOperators are the proxy-authenticated users with the operator
	// role; the others are editors.
	ProxyOperators []string
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration
	// MediaLinks maps a destination name or type to a URL template with
	// {id} (and optionally {publication}, {site_id} from the destination),
	// overriding the built-in links to the platforms' pages.
	MediaLinks map[string]string
}

// Loopback reports whether listen binds only a loopback address, where the
// page may be served without access control.
func (w Web) Loopback() bool { return IsLoopbackListen(w.Listen) }

// IsLoopbackListen reports whether host:port names only loopback
// addresses ("localhost", 127.0.0.0/8, ::1). An empty host binds every
// interface.
func IsLoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func buildWeb(t *table.Table) Web {
	w := Web{SessionTTL: t.Duration("session_ttl", 12*time.Hour, time.Minute)}
	if l, ok := t.Str("listen"); ok && l != "" {
		if err := checkListen(l); err != nil {
			t.Errf("listen", "%v", err)
		} else {
			w.Listen = l
		}
	}
	if s, ok := t.Str("users_file"); ok && s != "" {
		w.UsersFile = absPath(t, "users_file", "")
	}
	if h, ok := t.Str("trusted_proxy_header"); ok && h != "" {
		if strings.ContainsAny(h, " :\t") {
			t.Errf("trusted_proxy_header", "%q is not a header name", h)
		}
		w.TrustedProxyHeader = h
	}
	for _, s := range t.Strings("trusted_proxies") {
		p, err := parsePrefix(s)
		if err != nil {
			t.Errf("trusted_proxies", "%q is not an IP address or CIDR range", s)
			continue
		}
		w.TrustedProxies = append(w.TrustedProxies, p)
	}
	w.ProxyOperators = t.Strings("proxy_operators")
	if w.TrustedProxyHeader != "" && len(w.TrustedProxies) == 0 {
		t.Errf("trusted_proxies", "required with trusted_proxy_header: the addresses of the proxies allowed to set it")
	}
	if len(w.TrustedProxies) > 0 && w.TrustedProxyHeader == "" {
		t.Errf("trusted_proxy_header", "required with trusted_proxies")
	}
	if w.Listen != "" && !w.Loopback() && w.UsersFile == "" && w.TrustedProxyHeader == "" {
		t.Errf("listen", "%q is reachable from other machines: set users_file or trusted_proxy_header (or listen on 127.0.0.1)", w.Listen)
	}
	if v, ok := t.Get("media_links"); ok {
		m, isMap := v.(map[string]any)
		if !isMap {
			t.Errf("media_links", "want a table of name = \"https://...{id}\"")
		}
		for k, raw := range m {
			s, isStr := raw.(string)
			u, err := url.Parse(strings.NewReplacer("{id}", "x", "{publication}", "x", "{site_id}", "x").Replace(s))
			switch {
			case !isStr:
				t.Errf("media_links."+k, "want a string, got %s", table.TypeName(raw))
			case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
				t.Errf("media_links."+k, "%q is not an http(s) URL", s)
			case !strings.Contains(s, "{id}"):
				t.Errf("media_links."+k, "%q has no {id}", s)
			default:
				if w.MediaLinks == nil {
					w.MediaLinks = map[string]string{}
				}
				w.MediaLinks[k] = s
			}
		}
	}
	t.Unknown(nil)
	return w
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// writeEffective adds the [web] table to WriteEffective's output.
func (w Web) writeEffective(e *emitter) {
	e.section("[web]")
	e.str("listen", w.Listen)
	e.str("users_file", w.UsersFile)
	e.str("trusted_proxy_header", w.TrustedProxyHeader)
	var ps []string
	for _, p := range w.TrustedProxies {
		ps = append(ps, p.String())
	}
	e.list("trusted_proxies", ps)
	e.list("proxy_operators", w.ProxyOperators)
	e.dur("session_ttl", w.SessionTTL)
	if len(w.MediaLinks) > 0 {
		e.section("[web.media_links]")
		for _, k := range slices.Sorted(maps.Keys(w.MediaLinks)) {
			e.str(tomlKey(k), w.MediaLinks[k])
		}
	}
}
