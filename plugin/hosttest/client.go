// Package hosttest plays the host's side of the host protocol for tests and
// benchmarks: it writes JSON-RPC lines to a sidecar and reads its answers.
package hosttest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Response is one JSON-RPC response from the sidecar.
type Response struct {
	ID     *int64          `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *Error          `json:"error"`
}

// Error is a JSON-RPC error object.
type Error struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (e *Error) Error() string { return fmt.Sprintf("jsonrpc error %d: %s", e.Code, e.Message) }

type message struct {
	JSONRPC string `json:"jsonrpc"`
	Response
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// Client talks to one sidecar. Calls may run concurrently.
type Client struct {
	w      io.Writer
	wmu    sync.Mutex
	nextID int64

	mu      sync.Mutex
	waiting map[int64]chan Response
	orphans chan Response // responses with id null (answers to unreadable lines)
	logs    []json.RawMessage
	done    chan struct{}
	err     error
}

// New starts reading r; it returns when r ends, closing Done.
func New(r io.Reader, w io.Writer) *Client {
	c := &Client{w: w, waiting: map[int64]chan Response{}, orphans: make(chan Response, 16), done: make(chan struct{})}
	go c.read(r)
	return c
}

func (c *Client) read(r io.Reader) {
	defer close(c.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			c.fail(fmt.Errorf("sidecar wrote a line that is not JSON: %q", sc.Text()))
			return
		}
		if m.JSONRPC != "2.0" || (m.Method == "" && m.Result == nil && m.Error == nil) {
			c.fail(fmt.Errorf("sidecar wrote a line that is not a JSON-RPC 2.0 message: %q", sc.Text()))
			return
		}
		switch {
		case m.Method != "":
			c.mu.Lock()
			c.logs = append(c.logs, m.Params)
			c.mu.Unlock()
		case m.ID == nil:
			select {
			case c.orphans <- m.Response:
			default:
			}
		default:
			c.mu.Lock()
			ch := c.waiting[*m.ID]
			delete(c.waiting, *m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m.Response
			}
		}
	}
	c.fail(sc.Err())
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// Done is closed when the sidecar's output ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why reading stopped (nil at a clean end of output).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Logs are the log notifications received so far.
func (c *Client) Logs() []json.RawMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]json.RawMessage(nil), c.logs...)
}

// WriteLine sends raw bytes followed by a newline.
func (c *Client) WriteLine(line []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.w.Write(line); err != nil {
		return err
	}
	_, err := c.w.Write([]byte("\n"))
	return err
}

// ErrTimeout is returned when no answer came within the deadline.
var ErrTimeout = errors.New("no answer from the sidecar in time")

// Call sends a request and waits up to timeout for its response. A JSON-RPC
// error comes back as *Error; the result is decoded into result if non-nil.
func (c *Client) Call(method string, params any, result any, timeout time.Duration) error {
	p, err := c.Go(method, params)
	if err != nil {
		return err
	}
	return p.Wait(result, timeout)
}

// Pending is a request sent and not yet answered.
type Pending struct {
	c      *Client
	ID     int64
	method string
	ch     chan Response
}

// Go sends a request without waiting; Wait collects the answer.
func (c *Client) Go(method string, params any) (*Pending, error) {
	c.mu.Lock()
	c.nextID++
	p := &Pending{c: c, ID: c.nextID, method: method, ch: make(chan Response, 1)}
	c.waiting[p.ID] = p.ch
	c.mu.Unlock()

	line, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": p.ID, "method": method, "params": params})
	if err == nil {
		err = c.WriteLine(line)
	}
	if err != nil {
		c.forget(p.ID)
		return nil, err
	}
	return p, nil
}

// Wait waits up to timeout for the answer, as Call does.
func (p *Pending) Wait(result any, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case resp := <-p.ch:
		if resp.Error != nil {
			return resp.Error
		}
		if result != nil {
			return json.Unmarshal(resp.Result, result)
		}
		return nil
	case <-p.c.done:
		return fmt.Errorf("sidecar output ended before answering %s: %v", p.method, p.c.Err())
	case <-timer.C:
		p.c.forget(p.ID)
		return fmt.Errorf("%s: %w", p.method, ErrTimeout)
	}
}

func (c *Client) forget(id int64) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

// Notify sends a notification (a request without id).
func (c *Client) Notify(method string, params any) error {
	line, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params})
	if err != nil {
		return err
	}
	return c.WriteLine(line)
}

// Orphan waits for a response with id null: the answer to a line the sidecar
// could not read as a request.
func (c *Client) Orphan(timeout time.Duration) (Response, error) {
	select {
	case r := <-c.orphans:
		return r, nil
	case <-time.After(timeout):
		return Response{}, ErrTimeout
	}
}
