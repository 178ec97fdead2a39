package proxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
)

// Retries, as Envoy's router does them: retry_on is evaluated on each
// attempt's outcome; a request is retried at most num_retries times,
// after a jittered exponential backoff, and only while its body can be
// sent again (it was empty, or what was read of it fits in
// maxReplayBody); the previous_hosts predicate steers retries to hosts
// not tried yet. When the retries are exhausted or refused, the last
// response (or failure) is what the downstream gets.

const (
	maxReplayBody       = 64 << 10
	defaultRetryBase    = 25 * time.Millisecond
	defaultRetries      = 1
	previousHostsPolicy = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)

type retryOn uint32

const (
	retry5xx retryOn = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryStatusCodes
	retryRefusedStream
	retryCancelled
	retryDeadlineExceeded
	retryInternal
	retryResourceExhausted
	retryUnavailable
)

var retryOnNames = map[string]retryOn{
	"5xx":                    retry5xx,
	"gateway-error":          retryGatewayError,
	"reset":                  retryReset,
	"connect-failure":        retryConnectFailure,
	"retriable-status-codes": retryStatusCodes,
	"refused-stream":         retryRefusedStream,
	"cancelled":              retryCancelled,
	"deadline-exceeded":      retryDeadlineExceeded,
	"internal":               retryInternal,
	"resource-exhausted":     retryResourceExhausted,
	"unavailable":            retryUnavailable,
}

// grpcRetryOn maps grpc-status codes to their retry_on kinds.
var grpcRetryOn = map[string]retryOn{
	"1":  retryCancelled,
	"4":  retryDeadlineExceeded,
	"8":  retryResourceExhausted,
	"13": retryInternal,
	"14": retryUnavailable,
}

const retryGRPC = retryCancelled | retryDeadlineExceeded | retryInternal | retryResourceExhausted | retryUnavailable

type retryPolicy struct {
	on            retryOn
	numRetries    int
	statusCodes   []int
	base, max     time.Duration // backoff
	perTry        time.Duration // 0: none
	previousHosts bool
	hostAttempts  int // host picks per attempt, with previousHosts
}

func compileRetryPolicy(rp *routev3.RetryPolicy) (*retryPolicy, error) {
	if rp == nil {
		return nil, nil
	}
	if err := onlyFields(rp, "retry_on", "num_retries", "per_try_timeout", "retry_host_predicate",
		"host_selection_retry_max_attempts", "retriable_status_codes", "retry_back_off"); err != nil {
		return nil, err
	}
	p := &retryPolicy{numRetries: defaultRetries, base: defaultRetryBase, max: 10 * defaultRetryBase, hostAttempts: 1}
	for kind := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		kind = strings.TrimSpace(kind)
		if kind == "" {
			continue
		}
		bit, ok := retryOnNames[kind]
		if !ok {
			return nil, fmt.Errorf("retry_on %q is not supported", kind)
		}
		p.on |= bit
	}
	if n := rp.GetNumRetries(); n != nil {
		p.numRetries = int(n.GetValue())
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("retriable_status_codes: %d is not an HTTP status", c)
		}
		p.statusCodes = append(p.statusCodes, int(c))
	}
	if d := rp.GetPerTryTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("per_try_timeout %v is not a duration", d)
		}
		p.perTry = d.AsDuration()
	}
	if b := rp.GetRetryBackOff(); b != nil {
		p.base = b.GetBaseInterval().AsDuration()
		if p.base <= 0 {
			return nil, errors.New("retry_back_off: base_interval must be positive")
		}
		p.max = 10 * p.base
		if m := b.GetMaxInterval(); m != nil {
			if p.max = m.AsDuration(); p.max < p.base {
				return nil, errors.New("retry_back_off: max_interval is less than base_interval")
			}
		}
	}
	for _, hp := range rp.GetRetryHostPredicate() {
		tc := hp.GetTypedConfig()
		if tc == nil || tc.GetTypeUrl() != previousHostsPolicy {
			return nil, fmt.Errorf("retry_host_predicate %q: only previous_hosts is supported", hp.GetName())
		}
		if err := tc.UnmarshalTo(&previoushostsv3.PreviousHostsPredicate{}); err != nil {
			return nil, fmt.Errorf("retry_host_predicate %q: %v", hp.GetName(), err)
		}
		p.previousHosts = true
	}
	if n := rp.GetHostSelectionRetryMaxAttempts(); n > 0 {
		p.hostAttempts = 1 + int(min(n, 100))
	} else if p.previousHosts {
		p.hostAttempts = 2 // Envoy's default: one reattempt
	}
	return p, nil
}

// shouldRetry reports whether o (with resp, when there is one) calls for
// a retry under p. A global timeout or an overflow never does.
func (p *retryPolicy) shouldRetry(o outcome, resp *http.Response, err error) bool {
	switch o.failure {
	case failOverflow, failCanceled:
		return false
	case failConnect:
		return p.on&(retry5xx|retryGatewayError|retryReset|retryConnectFailure) != 0
	case failTimeout:
		return p.on&(retry5xx|retryGatewayError|retryReset) != 0
	case failReset:
		if p.on&(retry5xx|retryGatewayError|retryReset) != 0 {
			return true
		}
		return p.on&retryRefusedStream != 0 && err != nil && strings.Contains(err.Error(), "REFUSED_STREAM")
	}
	code := o.status
	switch {
	case p.on&retry5xx != 0 && code >= 500:
		return true
	case p.on&retryGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case p.on&retryStatusCodes != 0:
		for _, c := range p.statusCodes {
			if c == code {
				return true
			}
		}
	}
	if p.on&retryGRPC != 0 && resp != nil {
		if vs := resp.Header["Grpc-Status"]; len(vs) == 1 {
			return p.on&grpcRetryOn[vs[0]] != 0
		}
	}
	return false
}

// backoff is the wait before retry n (1 for the first): drawn at random
// below base × 2^(n-1), capped at max, as Envoy's jittered backoff.
func (p *retryPolicy) backoff(n int) time.Duration {
	d := p.base
	for i := 1; i < n && d < p.max; i++ {
		d *= 2
	}
	d = min(d, p.max)
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

var (
	errAttemptOver = errors.New("proxy: attempt abandoned")
	errNoReplay    = errors.New("proxy: request body too large to send again")
)

// requestBody is a downstream request body as the attempts read it. It
// tells the exchange when the body has ended (which starts the route's
// timeouts) and, when replay is on, keeps what it read, up to
// maxReplayBody, so that a retry can send it again and go on with the
// rest. Attempts read it through their own attemptBody; at most one at
// a time reads the downstream (readMu).
type requestBody struct {
	src    io.ReadCloser
	replay bool
	x      *exchange // told bodyEnded once, when src returned EOF
	touch  bool      // tell x of every read (idle timeout)

	readMu  sync.Mutex // held while reading src
	mu      sync.Mutex // guards the fields below
	buf     []byte     // what was read of src, while replayable
	n       int64      // bytes read of src
	ended   bool       // src returned EOF
	err     error      // src's error other than EOF
	over    bool       // more than maxReplayBody was read: buf dropped
	reading bool       // an attempt is reading src
}

// replayable reports whether a new attempt can send the whole body: it
// was kept, and no read of the downstream is under way (which could
// wait for a client that waits for a response).
func (b *requestBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.replay && !b.over && b.err == nil && !b.reading
}

// attempt returns a reader of the body from its start for one attempt.
func (b *requestBody) attempt() *attemptBody { return &attemptBody{b: b} }

// attemptBody is one attempt's view of the request body. Close abandons
// it (the transport closes request bodies; the downstream's is the
// server's to close).
type attemptBody struct {
	b      *requestBody
	off    int64
	closed atomic.Bool
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	for {
		if a.closed.Load() {
			return 0, errAttemptOver
		}
		b.mu.Lock()
		switch {
		case a.off < b.n && b.over:
			b.mu.Unlock()
			return 0, errNoReplay
		case a.off < b.n:
			k := copy(p, b.buf[a.off:])
			a.off += int64(k)
			b.mu.Unlock()
			return k, nil
		case b.ended:
			b.mu.Unlock()
			return 0, io.EOF
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		}
		b.mu.Unlock()
		if k, err, again := a.readSource(p); !again {
			return k, err
		}
	}
}

// readSource reads the downstream body into p, unless another attempt
// read past this one's offset meanwhile (again: read the buffer).
func (a *attemptBody) readSource(p []byte) (k int, err error, again bool) {
	b := a.b
	b.readMu.Lock()
	defer b.readMu.Unlock()
	b.mu.Lock()
	stale := a.off < b.n || b.ended || b.err != nil || a.closed.Load()
	b.reading = !stale
	b.mu.Unlock()
	if stale {
		return 0, nil, true
	}
	k, err = b.src.Read(p)
	if b.touch {
		b.x.touch()
	}
	b.mu.Lock()
	b.reading = false
	if k > 0 {
		if b.replay && !b.over {
			if b.n+int64(k) <= maxReplayBody {
				b.buf = append(b.buf, p[:k]...)
			} else {
				b.over, b.buf = true, nil
			}
		}
		b.n += int64(k)
		a.off += int64(k)
	}
	ended := false
	switch {
	case errors.Is(err, io.EOF):
		ended, b.ended = !b.ended, true
		err = io.EOF
	case err != nil:
		b.err = err
	}
	b.mu.Unlock()
	if ended {
		b.x.bodyEnded()
	}
	return k, err, false
}

func (a *attemptBody) Close() error {
	a.closed.Store(true)
	return nil
}

// plainBody is the request body of a route without retries: the
// downstream body as is, but for the end and activity notifications.
type plainBody struct {
	src   io.ReadCloser
	x     *exchange // told bodyEnded once, at the end
	touch bool      // tell x of every read (idle timeout)
	ended atomic.Bool
}

func (b *plainBody) Read(p []byte) (int, error) {
	k, err := b.src.Read(p)
	if b.touch {
		b.x.touch()
	}
	if errors.Is(err, io.EOF) && !b.ended.Swap(true) {
		b.x.bodyEnded()
	}
	return k, err
}

func (b *plainBody) Close() error { return nil }
