package uploader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// APIError is a non-2xx answer from a platform API. Message is the
// platform's own text (never a request header or query, which may hold
// credentials).
type APIError struct {
	Op      string // what we were doing, e.g. "jwplayer: create media"
	Status  int
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: HTTP %d %s", e.Op, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Status, e.Message)
}

// Call is one JSON API request.
type Call struct {
	Op     string // for errors: "bluebillywig: search mediaclip"
	Method string
	URL    string
	Header http.Header
	Body   []byte // sent as is; nil for none
	// Prepare runs before every try, e.g. to sign with a fresh nonce or a
	// time-based token. It may set headers and the URL's query.
	Prepare func(*http.Request) error
	// Out, when non-nil, receives the decoded JSON body of a 2xx answer.
	Out any
	// Message extracts the platform's error text from an error body;
	// nil uses a generic extraction ("error", "message", "errors[].description").
	Message func(body []byte) string
	// MaxTries bounds tries on 429, 5xx and network errors (default 5).
	MaxTries int
	// MaxWait caps one wait between tries, including Retry-After (default 30s).
	MaxWait time.Duration
}

// maxBody bounds how much of an API answer is read: platforms answer with
// small JSON documents, and a runaway body must not exhaust memory.
const maxBody = 8 << 20

// DoAPI performs c with client, retrying 429/5xx/network failures with
// exponential backoff that honours Retry-After. A 4xx other than 408/429 is
// returned at once as a permanent *APIError. A 2xx whose body is not valid
// JSON (when Out is set) is a transient error. It returns the final status.
func DoAPI(ctx context.Context, client *http.Client, c Call) (int, error) {
	if c.MaxTries <= 0 {
		c.MaxTries = 5
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 30 * time.Second
	}
	if client == nil {
		client = http.DefaultClient
	}
	backoff := 500 * time.Millisecond
	var lastErr error
	for try := 1; ; try++ {
		status, wait, err := doOnce(ctx, client, c)
		if err == nil || IsPermanent(err) {
			return status, err
		}
		lastErr = err
		if try >= c.MaxTries || ctx.Err() != nil {
			break
		}
		if wait <= 0 {
			wait = backoff
			backoff *= 2
		}
		wait = min(wait, c.MaxWait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("%s: %w", c.Op, ctx.Err())
		case <-t.C:
		}
	}
	return 0, lastErr
}

func doOnce(ctx context.Context, client *http.Client, c Call) (status int, wait time.Duration, err error) {
	var body io.Reader
	if c.Body != nil {
		body = bytes.NewReader(c.Body)
	}
	req, err := http.NewRequestWithContext(ctx, c.Method, c.URL, body)
	if err != nil {
		return 0, 0, Permanent(fmt.Errorf("%s: build request: %w", c.Op, err))
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if c.Body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Prepare != nil {
		if err := c.Prepare(req); err != nil {
			return 0, 0, Permanent(fmt.Errorf("%s: %w", c.Op, err))
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		// Strip the URL: its query may carry a signature or key.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return 0, 0, fmt.Errorf("%s: %w", c.Op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, 0, fmt.Errorf("%s: read answer: %w", c.Op, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if c.Out != nil && len(bytes.TrimSpace(data)) > 0 {
			if err := json.Unmarshal(data, c.Out); err != nil {
				return resp.StatusCode, 0, fmt.Errorf("%s: malformed JSON answer (HTTP %d): %w", c.Op, resp.StatusCode, err)
			}
		} else if c.Out != nil {
			return resp.StatusCode, 0, fmt.Errorf("%s: empty answer (HTTP %d)", c.Op, resp.StatusCode)
		}
		return resp.StatusCode, 0, nil
	}
	msgf := c.Message
	if msgf == nil {
		msgf = GenericMessage
	}
	apiErr := &APIError{Op: c.Op, Status: resp.StatusCode, Message: msgf(data)}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500 {
		wait := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if wait > 0 {
			return resp.StatusCode, wait, &RetryAfterError{Err: apiErr, After: wait}
		}
		return resp.StatusCode, 0, apiErr
	}
	return resp.StatusCode, 0, Permanent(apiErr)
}

// ParseRetryAfter reads a Retry-After value (seconds or an HTTP date).
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// GenericMessage pulls a human message out of common error bodies:
// {"error": "..."}, {"message": "..."}, {"errors":[{"description": "..."}]}.
func GenericMessage(body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Errors  []struct {
			Code        string `json:"code"`
			Description string `json:"description"`
			Message     string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &v) == nil {
		var parts []string
		for _, e := range v.Errors {
			msg := e.Description
			if msg == "" {
				msg = e.Message
			}
			if e.Code != "" {
				msg = e.Code + ": " + msg
			}
			parts = append(parts, msg)
		}
		if len(parts) > 0 {
			return strings.Join(parts, "; ")
		}
		if len(v.Error) > 0 {
			var s string
			if json.Unmarshal(v.Error, &s) == nil {
				return s
			}
			var o struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(v.Error, &o) == nil && o.Message != "" {
				return o.Message
			}
			return string(v.Error)
		}
		if v.Message != "" {
			return v.Message
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
