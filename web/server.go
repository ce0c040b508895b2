package web

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/watchfolder/watchfolder/config"
)

//go:embed templates static
var assets embed.FS

// Options for New.
type Options struct {
	Config config.Web
	Source Source
	Logger *slog.Logger
}

// Server is the status page.
type Server struct {
	cfg       config.Web
	src       Source
	log       *slog.Logger
	users     *usersFile // nil: no users_file
	open      bool       // loopback without access control: everyone is an editor
	key       []byte     // signs sessions and CSRF tokens
	dummyHash []byte
	limits    *rateLimiter
	pages     map[string]*template.Template
	handler   http.Handler

	srv    *http.Server
	ln     net.Listener
	cancel context.CancelFunc // ends open event streams at Close
}

// New checks the access-control settings and prepares the pages. It
// refuses a listener other machines can reach unless users_file or
// trusted_proxy_header is set.
func New(o Options) (*Server, error) {
	if o.Source == nil {
		return nil, errors.New("web: no source")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := o.Config
	hasAuth := c.UsersFile != "" || c.TrustedProxyHeader != ""
	if c.Listen != "" && !c.Loopback() && !hasAuth {
		return nil, fmt.Errorf("web: %s is reachable from other machines; set web.users_file or web.trusted_proxy_header", c.Listen)
	}
	if c.TrustedProxyHeader != "" && len(c.TrustedProxies) == 0 {
		return nil, errors.New("web: trusted_proxy_header needs trusted_proxies")
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 12 * time.Hour
	}
	s := &Server{cfg: c, src: o.Source, log: o.Logger, open: !hasAuth,
		key: make([]byte, 32), limits: newRateLimiter(loginMaxFailures, loginWindow)}
	if _, err := rand.Read(s.key); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if c.UsersFile != "" {
		u, err := loadUsers(c.UsersFile)
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		s.users = u
		h, err := bcrypt.GenerateFromPassword(s.key[:16], bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		s.dummyHash = h
	}
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// Handler serves every page (tests use it without a listener).
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on the configured address and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("web: listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	// No WriteTimeout: the event stream stays open. Slow clients are held
	// off by the header timeout; idle keep-alives are closed.
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web: server stopped", "err", err)
		}
	}()
	s.log.Info("status page listening", "addr", ln.Addr().String(), "users_file", s.users != nil,
		"trusted_proxy_header", s.cfg.TrustedProxyHeader)
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops the server; open event streams end.
func (s *Server) Close() error {
	if s == nil || s.srv == nil {
		return nil
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)

	mux.Handle("GET /{$}", s.need(RoleEditor, s.overview))
	mux.Handle("GET /folders/{name}", s.need(RoleEditor, s.folderPage))
	mux.Handle("GET /jobs", s.need(RoleEditor, s.jobsPage))
	mux.Handle("GET /jobs/{id}", s.need(RoleEditor, s.jobPage))
	mux.Handle("GET /events", s.need(RoleEditor, s.events))
	mux.Handle("GET /api/v1/status", s.need(RoleEditor, s.apiStatus))
	mux.Handle("POST /jobs/{id}/retry", s.need(RoleOperator, s.checkCSRF(s.retry)))
	mux.Handle("POST /folders/{name}/pause", s.need(RoleOperator, s.checkCSRF(s.pause(true))))
	mux.Handle("POST /folders/{name}/resume", s.need(RoleOperator, s.checkCSRF(s.pause(false))))

	// Browsers say where a form was posted from; one from another site is
	// refused before it reaches the token check.
	cop := http.NewCrossOriginProtection()
	return s.accessLog(securityHeaders(cop.Handler(mux)))
}

// cacheStatic lets browsers keep the embedded assets for a while (they
// change only with a new release) and lists no directories.
func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// csp allows only this server's own script, style and images: no inline
// script or style, no frames, forms post only here.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// need runs h only for a user with at least role.
func (s *Server) need(role Role, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, err := s.identify(r)
		var tooMany errTooMany
		switch {
		case errors.As(err, &tooMany):
			w.Header().Set("Retry-After", fmt.Sprint(int(tooMany.wait.Seconds())+1))
			http.Error(w, err.Error(), http.StatusTooManyRequests)
			return
		case err != nil || u == nil:
			s.unauthenticated(w, r)
			return
		case u.Role < role:
			s.errorPage(w, r, http.StatusForbidden, "Only operators can do this.")
			return
		}
		if lw, ok := w.(*logWriter); ok {
			lw.user = u.Name
		}
		h(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
	})
}

// unauthenticated answers a request without valid credentials: a browser
// asking for a page is sent to the login form; anything else gets 401.
func (s *Server) unauthenticated(w http.ResponseWriter, r *http.Request) {
	if s.users == nil {
		s.errorPage(w, r, http.StatusUnauthorized, "Sign in through the proxy in front of this page.")
		return
	}
	page := !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/events"
	if page && r.Method == http.MethodGet && r.Header.Get("X-Partial") == "" && acceptsHTML(r) {
		http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="watchfolder", charset="UTF-8"`)
	http.Error(w, "sign in first", http.StatusUnauthorized)
}
