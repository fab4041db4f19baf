package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

// wsTransport is the default transport.Transport: one WebSocket connection (RFC 6455)
// over TCP per link, TLS for wss://, binary messages only. The dialer
// offers the subprotocol clawmatrix.v2 and a listener requires it, which is
// how two protocol versions tell each other apart (docs/PROTOCOL.md,
// "Overview and versioning"). Its listener applies the pre-authentication
// limits of listen.go at TCP accept time.
type wsTransport struct {
	cfg      *Config
	log      *slog.Logger
	onEvict  func() // an unauthenticated connection was evicted
	upgrader websocket.Upgrader
	dialer   websocket.Dialer
}

// writeBufferPool shares gorilla's write buffers (handshake messages and
// close frames) between connections: an idle link holds none.
var writeBufferPool = &sync.Pool{}

// frameBufPool holds the buffers wsConn frames a batch of messages in.
var frameBufPool = sync.Pool{New: func() any { return new([]byte) }}

func newWSTransport(cfg *Config, log *slog.Logger, onEvict func()) *wsTransport {
	return &wsTransport{
		cfg:     cfg,
		log:     log,
		onEvict: onEvict,
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{subprotocol},
			HandshakeTimeout: cfg.AuthTimeout,
			ReadBufferSize:   4096,
			WriteBufferSize:  16 << 10,
			WriteBufferPool:  writeBufferPool,
		},
		dialer: websocket.Dialer{
			HandshakeTimeout: cfg.AuthTimeout,
			ReadBufferSize:   4096,
			WriteBufferSize:  16 << 10,
			WriteBufferPool:  writeBufferPool,
			Subprotocols:     []string{subprotocol},
			TLSClientConfig:  cfg.ClientTLS,
			Proxy:            nil, // peers are dialed directly
		},
	}
}

// Dial opens a WebSocket connection to a ws:// or wss:// URL. A listener
// that does not select clawmatrix.v2 speaks another protocol version: it is
// told so with CloseVersion and the error carries that code.
func (t *wsTransport) Dial(ctx context.Context, addr string) (transport.Conn, error) {
	conn, resp, err := t.dialer.DialContext(ctx, addr, nil)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", addr, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := newWSConn(conn, true)
	if conn.Subprotocol() != subprotocol {
		// A v1 listener ignores the offer and sends its JSON challenge.
		err := authFail(CloseVersion, "%s does not speak mesh protocol v%d (an older clawmatrix?): run the same clawmatrix version on every node", addr, ProtocolVersion)
		closeConn(c, CloseVersion, reasonOf(err))
		return nil, err
	}
	return c, nil
}

// Listen binds addr (host:port) and serves WebSocket upgrades on any path.
func (t *wsTransport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	var lc net.ListenConfig
	tcp, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var ln net.Listener = newTrackedListener(tcp, t.cfg, t.onEvict)
	scheme := "ws"
	if t.cfg.ServerTLS != nil {
		ln = tls.NewListener(ln, t.cfg.ServerTLS)
		scheme = "wss"
	}
	l := &wsListener{t: t, ln: ln, url: scheme + "://" + ln.Addr().String(), accepts: make(chan transport.Conn), done: make(chan struct{})}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: t.cfg.AuthTimeout,
		IdleTimeout:       t.cfg.AuthTimeout,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(t.log.Handler(), slog.LevelDebug),
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.log.Error("mesh: listener stopped", "err", err)
		}
	}()
	return l, nil
}

// upgrade turns an HTTP request into a connection. A dialer that did not
// offer clawmatrix.v2 still gets one, whose first read fails with
// CloseVersion, so that the node refuses it like any failed handshake.
func (t *wsTransport) upgrade(w http.ResponseWriter, r *http.Request) (transport.Conn, error) {
	conn, err := t.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return nil, err // the upgrader has answered with an HTTP error
	}
	c := newWSConn(conn, false)
	if conn.Subprotocol() != subprotocol {
		c.firstErr = authFail(CloseVersion, "this node speaks mesh protocol v%d and the peer did not offer it (an older clawmatrix?): run the same clawmatrix version on every node", ProtocolVersion)
	}
	return c, nil
}

// wsListener hands the upgraded connections of its HTTP server to Accept.
type wsListener struct {
	t       *wsTransport
	ln      net.Listener
	srv     *http.Server
	url     string
	accepts chan transport.Conn
	done    chan struct{}

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // the server and its handlers
}

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		http.Error(w, "mesh node is shutting down", http.StatusServiceUnavailable)
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	c, err := l.t.upgrade(w, r)
	if err != nil {
		return
	}
	select {
	case l.accepts <- c:
	case <-l.done:
		closeConn(c, CloseShutdown, closeReasons[CloseShutdown])
	}
}

func (l *wsListener) Accept() (transport.Conn, error) {
	select {
	case c := <-l.accepts:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("mesh: accept on %s: %w", l.url, net.ErrClosed)
	}
}

// Close stops the server and waits for its handlers, which hand no more
// connections out.
func (l *wsListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	err := l.srv.Close()
	l.wg.Wait()
	return err
}

func (l *wsListener) Addr() net.Addr { return l.ln.Addr() }
func (l *wsListener) URL() string    { return l.url }

// wsConn is a Conn over one WebSocket connection. Reading, the handshake's
// upgrade and control frames stay with gorilla/websocket; a batch of
// messages is framed here (wsframe.go) and written with one system call,
// where gorilla would write each message separately.
type wsConn struct {
	c      *websocket.Conn
	client bool // masks what it writes (RFC 6455 section 5.3)
	// firstErr, when set, is what the first read returns (a dialer that
	// offered another protocol version).
	firstErr error
	// wmu (capacity 1) orders batches and the close frame: once the close
	// frame is written (closeSent), nothing follows it.
	wmu       chan struct{}
	closeSent bool
	dmu       sync.Mutex
	wdeadline time.Time
}

func newWSConn(c *websocket.Conn, client bool) *wsConn {
	w := &wsConn{c: c, client: client, wmu: make(chan struct{}, 1)}
	// The peer's close frame is echoed under wmu, so that it is the last
	// thing this side writes (gorilla's default handler would write it
	// whatever a batch is doing), and not at all when this side closed
	// first.
	c.SetCloseHandler(func(code int, _ string) error {
		_ = w.writeClose(websocket.FormatCloseMessage(code, ""), time.Second)
		return nil
	})
	return w
}

// authenticator is implemented by connections whose transport limits
// unauthenticated connections (the WebSocket listener): the node tells it
// when a handshake has succeeded, which exempts the connection.
type authenticator interface {
	authenticated()
}

// errTextMessage is a WebSocket text message: not part of protocol v2, but
// what v1 peers send.
var errTextMessage = errors.New("text message")

func (w *wsConn) ReadMessage(buf []byte, limit int) ([]byte, error) {
	if err := w.firstErr; err != nil {
		return nil, err
	}
	mt, r, err := w.c.NextReader()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &transport.CloseError{Code: ce.Code, Reason: ce.Text}
		}
		return nil, err
	}
	if cap(buf) == 0 {
		buf = getReadBuf()
	}
	data, err := readLimited(r, buf[:0], limit)
	if err == nil && mt != websocket.BinaryMessage {
		err = errTextMessage
	}
	return data, err
}

// readBufPool holds the buffers links read records into, shared so that
// an idle link holds none: a link takes one when a message arrives and
// gives it back once the record is decrypted.
var readBufPool sync.Pool // of *[]byte

func getReadBuf() []byte {
	if p, ok := readBufPool.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return nil
}

// putReadBuf gives b to the pool; nothing may use it afterwards. Buffers
// beyond a record's size (a handshake message) are left to the collector.
func putReadBuf(b []byte) {
	if cap(b) < 512 || cap(b) > maxRecordBytes+1 {
		return
	}
	b = b[:0]
	readBufPool.Put(&b)
}

// readLimited reads one message into buf, refusing more than max bytes
// without buffering them.
func readLimited(r io.Reader, buf []byte, max int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if len(buf) > max {
				return buf, transport.ErrMessageTooLarge
			}
			grow := cap(buf)
			if grow < 512 {
				grow = 512
			}
			if cap(buf)+grow > max+1 {
				grow = max + 1 - cap(buf)
				if grow <= 0 {
					grow = 1
				}
			}
			buf = append(buf, make([]byte, grow)...)[:len(buf)]
		}
		k, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if len(buf) > max {
			return buf, transport.ErrMessageTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// maxFrameBuf is the largest framing buffer kept for reuse.
const maxFrameBuf = 256 << 10

func (w *wsConn) WriteMessages(msgs ...[]byte) error {
	w.wmu <- struct{}{}
	defer func() { <-w.wmu }()
	if w.closeSent {
		return errLinkClosed
	}
	bp := frameBufPool.Get().(*[]byte)
	b := (*bp)[:0]
	for _, m := range msgs {
		var key uint32
		var mask bool
		b, key, mask = appendBinaryHeader(b, len(m), w.client)
		start := len(b)
		b = append(b, m...)
		if mask {
			maskFrame(b[start:], key)
		}
	}
	nc := w.c.NetConn()
	w.dmu.Lock()
	_ = nc.SetWriteDeadline(w.wdeadline)
	w.dmu.Unlock()
	_, err := nc.Write(b)
	if cap(b) <= maxFrameBuf {
		*bp = b[:0]
		frameBufPool.Put(bp)
	}
	return err
}

func (w *wsConn) WriteClose(code int, reason string, wait time.Duration) error {
	return w.writeClose(websocket.FormatCloseMessage(code, truncReason(reason)), wait)
}

// writeClose sends a close frame once no batch is in flight, waiting at
// most d for one to finish.
func (w *wsConn) writeClose(msg []byte, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case w.wmu <- struct{}{}:
	case <-t.C:
		// A batch is stuck on a slow peer; the reader's deadline ends
		// the connection.
		return fmt.Errorf("mesh: close frame not sent: a write has been blocked for %v", d)
	}
	defer func() { <-w.wmu }()
	if w.closeSent {
		return nil
	}
	w.closeSent = true
	return w.c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(d))
}

func (w *wsConn) SetReadDeadline(t time.Time) error { return w.c.SetReadDeadline(t) }

func (w *wsConn) SetWriteDeadline(t time.Time) error {
	w.dmu.Lock()
	w.wdeadline = t
	w.dmu.Unlock()
	return nil
}

func (w *wsConn) Close() error         { return w.c.Close() }
func (w *wsConn) RemoteAddr() net.Addr { return w.c.RemoteAddr() }

// authenticated exempts the connection from the listener's eviction of
// unauthenticated connections.
func (w *wsConn) authenticated() { markAuthenticated(w.c.NetConn()) }
