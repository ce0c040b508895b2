package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Page sizes: the overview shows a few rows per section, lists more.
const (
	overviewRows = 10
	folderRows   = 50
	listRows     = 50
)

// accessLog logs every request once it is answered.
func (s *Server) accessLog(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lw := &logWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(lw, r)
		if r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/static/") {
			return // load balancers and assets would drown the rest
		}
		s.log.Info("web request", "method", r.Method, "path", r.URL.Path, "status", lw.code,
			"user", lw.user, "remote", clientIP(r).String(), "duration", time.Since(start).Round(time.Microsecond))
	})
}

type logWriter struct {
	http.ResponseWriter
	code int
	user string
}

func (l *logWriter) WriteHeader(code int) {
	l.code = code
	l.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (l *logWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

func acceptsHTML(r *http.Request) bool {
	a := r.Header.Get("Accept")
	return a == "" || strings.Contains(a, "text/html") || strings.Contains(a, "*/*")
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// base is what every page template gets.
type base struct {
	Title   string
	User    *user
	CSRF    string
	Now     time.Time
	Message string
}

func (s *Server) base(r *http.Request, title string) base {
	u := userOf(r.Context())
	return base{Title: title, User: u, CSRF: s.csrfToken(u), Now: time.Now()}
}

func (u *user) IsOperator() bool { return u != nil && u.Role >= RoleOperator }

// render writes a page; with X-Partial it writes only the part the script
// swaps in on a live update.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, page string, data any) {
	t := s.pages[page]
	name := "layout"
	if r.Header.Get("X-Partial") != "" {
		name = "main"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("web: render", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	data := struct {
		base
		Code int
	}{s.base(r, http.StatusText(code)), code}
	data.Message = msg
	s.render(w, r, code, "error.html", data)
}

// sourceError answers a failed Source call.
func (s *Server) sourceError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		s.errorPage(w, r, http.StatusNotFound, "Not found.")
	case errors.Is(err, ErrConflict):
		s.errorPage(w, r, http.StatusConflict, scrub(err.Error()))
	case errors.Is(err, context.Canceled):
	default:
		s.log.Error("web: source", "path", r.URL.Path, "err", err)
		s.errorPage(w, r, http.StatusInternalServerError, "The daemon could not answer; see its log.")
	}
}

// folderView is one folder's section on the overview and folder pages.
type folderView struct {
	Folder
	Waiting  *Page
	Done     *Page
	Failed   *Page
	Rows     int
	Midnight time.Time
}

func (s *Server) folderViews(ctx context.Context, sum *Summary, only string, rows int) ([]folderView, error) {
	now := time.Now()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	// Files not yet uploading or finished; states the source does not
	// know are left out.
	var waiting []string
	for _, st := range []string{"waiting", "queued", "probing", "retry", "moving"} {
		if slices.Contains(sum.states(), st) {
			waiting = append(waiting, st)
		}
	}
	var out []folderView
	for _, f := range sum.Folders {
		if only != "" && f.Name != only {
			continue
		}
		v := folderView{Folder: f, Rows: rows, Midnight: midnight}
		var err error
		if v.Waiting, err = s.src.Jobs(ctx, Query{Folder: f.Name, States: waiting, Limit: rows}); err != nil {
			return nil, err
		}
		if v.Done, err = s.src.Jobs(ctx, Query{Folder: f.Name, States: []string{"done"}, Since: midnight, Limit: rows}); err != nil {
			return nil, err
		}
		if v.Failed, err = s.src.Jobs(ctx, Query{Folder: f.Name, States: []string{"failed"}, Limit: rows}); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

type overviewData struct {
	base
	Summary *Summary
	Folders []folderView
	Single  bool
	States  []string
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	sum, err := s.src.Summary(r.Context())
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	views, err := s.folderViews(r.Context(), sum, "", overviewRows)
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "overview.html", overviewData{s.base(r, "Status"), sum, views, false, sum.states()})
}

func (s *Server) folderPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	sum, err := s.src.Summary(r.Context())
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	views, err := s.folderViews(r.Context(), sum, name, folderRows)
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	if len(views) == 0 {
		s.errorPage(w, r, http.StatusNotFound, "No folder of that name is watched.")
		return
	}
	s.render(w, r, http.StatusOK, "overview.html", overviewData{s.base(r, name), sum, views, true, sum.states()})
}

func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request) {
	sum, err := s.src.Summary(r.Context())
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	q := r.URL.Query()
	query := Query{Folder: q.Get("folder"), Name: strings.TrimSpace(q.Get("q")), Limit: listRows}
	if st := q.Get("state"); st != "" {
		if !slices.Contains(sum.states(), st) {
			s.errorPage(w, r, http.StatusBadRequest, "Unknown state.")
			return
		}
		query.States = []string{st}
	}
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil {
			s.errorPage(w, r, http.StatusBadRequest, "Bad page cursor.")
			return
		}
		query.Before = n
	}
	if q.Get("since") == "today" {
		now := time.Now()
		query.Since = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	}
	page, err := s.src.Jobs(r.Context(), query)
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	var folders []string
	for _, f := range sum.Folders {
		folders = append(folders, f.Name)
	}
	next := ""
	if page.Next != 0 {
		v := url.Values{}
		for _, k := range []string{"folder", "state", "q", "since"} {
			if x := q.Get(k); x != "" {
				v.Set(k, x)
			}
		}
		v.Set("before", strconv.FormatUint(page.Next, 10))
		next = "/jobs?" + v.Encode()
	}
	first := ""
	if query.Before != 0 {
		v := url.Values{}
		for _, k := range []string{"folder", "state", "q", "since"} {
			if x := q.Get(k); x != "" {
				v.Set(k, x)
			}
		}
		first = "/jobs?" + v.Encode()
	}
	title := "Files"
	if query.Name != "" {
		title = "Search: " + query.Name
	}
	s.render(w, r, http.StatusOK, "jobs.html", struct {
		base
		Query    Query
		State    string
		Since    string
		Page     *Page
		Folders  []string
		States   []string
		NextURL  string
		FirstURL string
	}{s.base(r, title), query, q.Get("state"), q.Get("since"), page, folders, sum.states(), next, first})
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		s.errorPage(w, r, http.StatusNotFound, "Not found.")
		return
	}
	j, err := s.src.Job(r.Context(), id)
	if err != nil {
		s.sourceError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "job.html", struct {
		base
		Job *Job
	}{s.base(r, j.Name), j})
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.src.StatusJSON(r.Context())
	if err != nil {
		s.log.Error("web: status", "err", err)
		http.Error(w, `{"error":"status unavailable"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(st)
}

// events streams "change" events; the page script then fetches the part
// of the page that changed. A comment every 15s keeps proxies from closing
// an idle stream.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 3000\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	ch := s.src.Changes(r.Context())
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprint(w, "event: change\ndata: {}\n\n")
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case <-r.Context().Done():
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// checkCSRF requires the form's token to match the user's.
func (s *Server) checkCSRF(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		tok := r.PostFormValue("csrf")
		want := s.csrfToken(userOf(r.Context()))
		if tok == "" || want == "" || !hmacEqual(tok, want) {
			s.errorPage(w, r, http.StatusForbidden, "The form is out of date; reload the page and try again.")
			return
		}
		h(w, r)
	}
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		s.errorPage(w, r, http.StatusNotFound, "Not found.")
		return
	}
	if err := s.src.Retry(r.Context(), id); err != nil {
		s.sourceError(w, r, err)
		return
	}
	s.log.Info("web: retry requested", "job", id, "user", userOf(r.Context()).Name)
	http.Redirect(w, r, "/jobs/"+strconv.FormatUint(id, 10), http.StatusSeeOther)
}

func (s *Server) pause(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := s.src.SetPaused(r.Context(), name, on); err != nil {
			s.sourceError(w, r, err)
			return
		}
		s.log.Info("web: folder pause changed", "folder", name, "paused", on, "user", userOf(r.Context()).Name)
		http.Redirect(w, r, "/folders/"+url.PathEscape(name), http.StatusSeeOther)
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.users == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	b := s.base(r, "Sign in")
	b.Message = msg
	s.render(w, r, code, "login.html", struct {
		base
		Next string
	}{b, localPath(r.FormValue("next"))})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.users == nil {
		http.Error(w, "no users_file: sign-in is not used", http.StatusNotFound)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	u, err := s.checkPassword(r, r.PostFormValue("user"), r.PostFormValue("password"))
	var tooMany errTooMany
	if errors.As(err, &tooMany) {
		w.Header().Set("Retry-After", fmt.Sprint(int(tooMany.wait.Seconds())+1))
		s.renderLogin(w, r, http.StatusTooManyRequests, err.Error())
		return
	}
	if err != nil {
		s.renderLogin(w, r, http.StatusUnauthorized, err.Error())
		return
	}
	exp := time.Now().Add(s.cfg.SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.sessionValue(u.Name, u.hash, exp), Path: "/",
		Expires: exp, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	s.log.Info("web: signed in", "user", u.Name, "role", u.Role.String(), "remote", clientIP(r).String())
	http.Redirect(w, r, localPath(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// localPath keeps a redirect target on this site: a path, not "//host".
func localPath(p string) string {
	if p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") ||
		strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}
