package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/clawmatrix/clawmatrix/schema"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// twoNodes is A (the front, no models) linked to B, which serves "m"
// through the mock upstream.
func twoNodes(t *testing.T) (a, b *mesh.Node, up *mockllm.Server, front *Server) {
	up = startLLM(t, "up-b")
	b = startNode(t, "b", []schema.Model{upstreamModel("m", up)})
	a = startNode(t, "a", nil, b)
	waitServes(t, a, "b", "m")
	return a, b, up, startFront(t, a)
}

func TestProxyCompletions(t *testing.T) {
	_, _, up, front := twoNodes(t)
	c := newClient(front)
	ctx := testCtx(t)

	t.Run("plain", func(t *testing.T) {
		var resp *http.Response
		out, err := c.Chat.Completions.New(ctx, chatParams("m"), option.WithResponseInto(&resp), option.WithJSONSet("x_vendor", map[string]any{"keep": []int{1, 2}}))
		if err != nil {
			t.Fatal(err)
		}
		if out.Choices[0].Message.Content != "reply from up-b" || out.Usage.TotalTokens != 10 || out.Model != "m" {
			t.Fatalf("completion = %+v", out)
		}
		if servedBy(resp) != "b" || resp.Header.Get("X-Mock-Server") != "up-b" {
			t.Fatalf("served by %q, upstream header %q", servedBy(resp), resp.Header.Get("X-Mock-Server"))
		}
		calls := up.Calls()
		if last := calls[len(calls)-1]; !bytes.Contains(last.Body, []byte(`"x_vendor":{"keep":[1,2]}`)) {
			t.Fatalf("unknown field not passed through: %s", last.Body)
		}
	})

	t.Run("stream", func(t *testing.T) {
		p := chatParams("m")
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		st := c.Chat.Completions.NewStreaming(ctx, p)
		defer st.Close()
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for st.Next() {
			acc.AddChunk(st.Current())
			chunks++
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		// 3 pieces, the finish chunk and the usage chunk.
		if chunks != 5 || acc.Choices[0].Message.Content != "reply from up-b" || acc.Usage.TotalTokens != 10 {
			t.Fatalf("chunks %d, content %q, usage %+v", chunks, acc.Choices[0].Message.Content, acc.Usage)
		}
	})

	tool := openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name:       "get_weather",
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
	})
	t.Run("tool calls", func(t *testing.T) {
		p := chatParams("m")
		p.Tools = []openai.ChatCompletionToolUnionParam{tool}
		out, err := c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		calls := out.Choices[0].Message.ToolCalls
		if out.Choices[0].FinishReason != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"Paris"}` {
			t.Fatalf("tool calls = %+v", out.Choices[0])
		}
		// The tool result goes back through the proxy unchanged.
		p.Messages = append(p.Messages, out.Choices[0].Message.ToParam(), openai.ToolMessage("sunny", calls[0].ID))
		out, err = c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if out.Choices[0].Message.Content != "reply from up-b" {
			t.Fatalf("after tool result: %+v", out.Choices[0])
		}
		var sent struct {
			Messages []map[string]any `json:"messages"`
			Tools    []map[string]any `json:"tools"`
		}
		all := up.Calls()
		if err := json.Unmarshal(all[len(all)-1].Body, &sent); err != nil {
			t.Fatal(err)
		}
		if len(sent.Messages) != 3 || sent.Messages[2]["role"] != "tool" || sent.Messages[2]["tool_call_id"] != "call_1" || len(sent.Tools) != 1 {
			t.Fatalf("upstream saw %s", all[len(all)-1].Body)
		}
	})

	t.Run("streamed tool calls", func(t *testing.T) {
		p := chatParams("m")
		p.Tools = []openai.ChatCompletionToolUnionParam{tool}
		st := c.Chat.Completions.NewStreaming(ctx, p)
		defer st.Close()
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		calls := acc.Choices[0].Message.ToolCalls
		if len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"Paris"}` {
			t.Fatalf("accumulated tool calls = %+v", calls)
		}
	})

	t.Run("upstream error passed through", func(t *testing.T) {
		up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limited"}}`)
			return true
		})
		defer up.SetBefore(nil)
		_, err := c.Chat.Completions.New(ctx, chatParams("m"))
		wantAPIError(t, err, http.StatusTooManyRequests, "rate_limited", "slow down")
	})
}

func TestProxyRelayAndLocal(t *testing.T) {
	// a - b - c in a line: a reaches c only through b. a serves "local"
	// itself, c serves "far".
	upA, upC := startLLM(t, "up-a"), startLLM(t, "up-c")
	b := startNode(t, "b", nil)
	a := startNode(t, "a", []schema.Model{upstreamModel("local", upA)}, b)
	c := startNode(t, "c", []schema.Model{upstreamModel("far", upC)}, b)
	waitServes(t, a, "c", "far")
	if p, _ := a.Peer("c"); p.Status != mesh.StatusRelay {
		t.Fatalf("a reaches c as %q, want relay", p.Status)
	}
	_ = c
	front := startFront(t, a)
	cl := newClient(front)
	ctx := testCtx(t)

	for _, tt := range []struct{ model, node, text string }{{"far", "c", "reply from up-c"}, {"local", "a", "reply from up-a"}} {
		var resp *http.Response
		out, err := cl.Chat.Completions.New(ctx, chatParams(tt.model), option.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		if out.Choices[0].Message.Content != tt.text || servedBy(resp) != tt.node {
			t.Fatalf("%s: %q from %q", tt.model, out.Choices[0].Message.Content, servedBy(resp))
		}
		text, _, err := streamText(ctx, cl, chatParams(tt.model))
		if err != nil || text != tt.text {
			t.Fatalf("%s stream: %q, %v", tt.model, text, err)
		}
	}

	page, err := cl.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID+"@"+m.OwnedBy)
	}
	if strings.Join(ids, ",") != "far@c,local@a" {
		t.Fatalf("models = %v", ids)
	}
	if m, err := cl.Models.Get(ctx, "far"); err != nil || m.ID != "far" {
		t.Fatalf("get far: %+v %v", m, err)
	}
	_, err = cl.Models.Get(ctx, "nope")
	wantAPIError(t, err, http.StatusNotFound, codeModelNotFound, `"nope"`)
}

func TestProxyPinnedRouting(t *testing.T) {
	upB, upC := startLLM(t, "up-b"), startLLM(t, "up-c")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", upB)})
	c := startNode(t, "c", []schema.Model{upstreamModel("m", upC)}, b)
	a := startNode(t, "a", nil, b, c)
	waitServes(t, a, "b", "m")
	waitServes(t, a, "c", "m")
	front := startFront(t, a,
		schema.ProxyModel{ID: "m", NodeID: "c"},
		schema.ProxyModel{ID: "ghost-model", NodeID: "ghost"},
		schema.ProxyModel{ID: "wanted"})
	cl := newClient(front)
	ctx := testCtx(t)
	for i := 0; i < 5; i++ {
		var resp *http.Response
		if _, err := cl.Chat.Completions.New(ctx, chatParams("m"), option.WithResponseInto(&resp)); err != nil {
			t.Fatal(err)
		}
		if servedBy(resp) != "c" {
			t.Fatalf("request %d served by %q, want the pinned c", i, servedBy(resp))
		}
	}
	if len(upB.Calls()) != 0 || len(upC.Calls()) != 5 {
		t.Fatalf("b got %d, c got %d", len(upB.Calls()), len(upC.Calls()))
	}
	_, err := cl.Chat.Completions.New(ctx, chatParams("ghost-model"))
	wantAPIError(t, err, http.StatusServiceUnavailable, codeModelUnavailable, `pinned to node "ghost"`)
	_, err = cl.Chat.Completions.New(ctx, chatParams("wanted"))
	wantAPIError(t, err, http.StatusServiceUnavailable, codeModelUnavailable, `no reachable node serves model "wanted"`)
}

// holdUntil makes every upstream hold its response until n requests have
// arrived across all of them (or the test's time runs out).
type gate struct {
	n       int32
	arrived atomic.Int32
	open    chan struct{}
	once    sync.Once
}

func newGate(n int32) *gate { return &gate{n: n, open: make(chan struct{})} }

func (g *gate) hold(w http.ResponseWriter, r *http.Request) bool {
	if g.arrived.Add(1) >= g.n {
		g.once.Do(func() { close(g.open) })
	}
	select {
	case <-g.open:
	case <-r.Context().Done():
		return true
	case <-time.After(10 * time.Second):
	}
	return false
}

func TestProxyLoadSpread(t *testing.T) {
	upB, upC := startLLM(t, "up-b"), startLLM(t, "up-c")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", upB)})
	c := startNode(t, "c", []schema.Model{upstreamModel("m", upC)}, b)
	a := startNode(t, "a", nil, b, c)
	waitServes(t, a, "b", "m")
	waitServes(t, a, "c", "m")
	front := startFront(t, a)
	cl := newClient(front)
	ctx := testCtx(t)

	const n = 6
	g := newGate(n)
	upB.SetBefore(g.hold)
	upC.SetBefore(g.hold)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cl.Chat.Completions.New(ctx, chatParams("m"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each request found the other node less loaded, so they alternate.
	if len(upB.Calls()) != n/2 || len(upC.Calls()) != n/2 {
		t.Fatalf("b got %d, c got %d; want %d each", len(upB.Calls()), len(upC.Calls()), n/2)
	}
}

func TestProxyFailover(t *testing.T) {
	upB, upC := startLLM(t, "up-b"), startLLM(t, "up-c")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", upB)})
	c := startNode(t, "c", []schema.Model{upstreamModel("m", upC)}, b)
	a := startNode(t, "a", nil, b, c)
	waitServes(t, a, "b", "m")
	waitServes(t, a, "c", "m")
	front := startFront(t, a)
	cl := newClient(front)
	ctx := testCtx(t)

	// The first request holds on whichever node gets it; that node is then
	// closed before sending a byte, and the request must finish on the other.
	var first atomic.Bool
	held := make(chan string, 1)
	hold := func(name string) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if first.CompareAndSwap(false, true) {
				held <- name
				<-r.Context().Done()
				return true
			}
			return false
		}
	}
	upB.SetBefore(hold("b"))
	upC.SetBefore(hold("c"))
	nodes := map[string]*mesh.Node{"b": b, "c": c}
	ups := map[string]*mockllm.Server{"b": upB, "c": upC}
	go func() {
		select {
		case name := <-held:
			nodes[name].Close()
		case <-ctx.Done():
		}
	}()
	var resp *http.Response
	out, err := cl.Chat.Completions.New(ctx, chatParams("m"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	survivor := servedBy(resp)
	dead := map[string]string{"b": "c", "c": "b"}[survivor]
	if survivor == "" || out.Choices[0].Message.Content != "reply from up-"+survivor {
		t.Fatalf("served by %q: %+v", survivor, out.Choices[0].Message)
	}
	if len(ups[dead].Calls()) != 1 || len(ups[survivor].Calls()) != 1 {
		t.Fatalf("dead %s saw %d calls, survivor %s saw %d", dead, len(ups[dead].Calls()), survivor, len(ups[survivor].Calls()))
	}
	select {
	case <-ups[dead].Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("the closed node's upstream request was not cancelled")
	}
	// Once a is told the node is gone, requests keep going to the survivor.
	waitGone(t, a, dead)
	text, _, err := streamText(ctx, cl, chatParams("m"))
	if err != nil || text != "reply from up-"+survivor {
		t.Fatalf("after failover: %q %v", text, err)
	}
}

func TestProxyFailoverUpstreamDown(t *testing.T) {
	upC := startLLM(t, "up-c")
	b := startNode(t, "b", []schema.Model{model("m", "local", &schema.Upstream{BaseURL: "http://127.0.0.1:1/v1"})})
	c := startNode(t, "c", []schema.Model{upstreamModel("m", upC)}, b)
	a := startNode(t, "a", nil, b, c)
	waitServes(t, a, "b", "m")
	waitServes(t, a, "c", "m")
	cl := newClient(startFront(t, a))
	ctx := testCtx(t)
	for i := 0; i < 4; i++ {
		var resp *http.Response
		out, err := cl.Chat.Completions.New(ctx, chatParams("m"), option.WithResponseInto(&resp))
		if err != nil {
			var ae *openai.Error
			if errors.As(err, &ae) {
				t.Fatalf("request %d: %d %s", i, ae.StatusCode, ae.Message)
			}
			t.Fatal(err)
		}
		if servedBy(resp) != "c" || out.Choices[0].Message.Content != "reply from up-c" {
			t.Fatalf("request %d: %q from %q", i, out.Choices[0].Message.Content, servedBy(resp))
		}
	}
	// With c gone too, the 503 names the model and both nodes' failures.
	c.Close()
	waitGone(t, a, "c")
	_, err := cl.Chat.Completions.New(ctx, chatParams("m"))
	ae := wantAPIError(t, err, http.StatusServiceUnavailable, codeModelUnavailable, `no node could serve model "m"; tried b`)
	if !strings.Contains(ae.Message, "connection refused") {
		t.Fatalf("503 does not say why b failed: %s", ae.Message)
	}
}

func TestProxyNodeDiesMidResponse(t *testing.T) {
	a, b, up, front := twoNodes(t)
	cl := newClient(front)
	ctx := testCtx(t)
	died := make(chan struct{})
	var closeOnce sync.Once
	kill := func() { closeOnce.Do(func() { b.Close(); close(died) }) }

	t.Run("stream", func(t *testing.T) {
		up.SetReply(mockllm.Pieces("one ", "two ", "three"))
		up.SetBetween(func(r *http.Request, i int) {
			if i == 1 {
				<-r.Context().Done() // hold after two pieces
			}
		})
		st := cl.Chat.Completions.NewStreaming(ctx, chatParams("m"))
		defer st.Close()
		text := ""
		for st.Next() {
			text += st.Current().Choices[0].Delta.Content
			if text == "one two " {
				go kill()
			}
		}
		err := st.Err()
		if err == nil || !strings.Contains(err.Error(), `broke off the response`) || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("stream ended with %v after %q; want an error event", err, text)
		}
		if text != "one two " {
			t.Fatalf("text %q", text)
		}
		select {
		case <-up.Cancelled():
		case <-time.After(5 * time.Second):
			t.Fatal("upstream request was not cancelled when its node closed")
		}
	})

	t.Run("plain", func(t *testing.T) {
		// A second serving node that sends half a body, then dies.
		up2 := startLLM(t, "up-d")
		arrived := make(chan struct{}, 1)
		up2.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[`)
			w.(http.Flusher).Flush()
			arrived <- struct{}{}
			<-r.Context().Done()
			return true
		})
		d := startNode(t, "d", []schema.Model{upstreamModel("m2", up2)}, a)
		waitServes(t, a, "d", "m2")
		go func() {
			select {
			case <-arrived:
				time.Sleep(20 * time.Millisecond) // let the head and the half body reach a
				d.Close()
			case <-ctx.Done():
			}
		}()
		_, err := cl.Chat.Completions.New(ctx, chatParams("m2"))
		wantAPIError(t, err, http.StatusBadGateway, codeUpstream, `node "d" broke off the response`)
	})
	<-died
}

// A plain response is held until complete, so a node that dies before the
// end has sent nothing to the client yet: the request goes to the next node.
func TestProxyRetriesWhenNodeDiesMidPlainResponse(t *testing.T) {
	a := startNode(t, "a", nil)
	var armed atomic.Bool
	armed.Store(true)
	dying := make(chan string, 1)
	halfThenHang := func(name string) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if !armed.CompareAndSwap(true, false) {
				return false // answer normally
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[`)
			w.(http.Flusher).Flush()
			dying <- name
			<-r.Context().Done()
			return true
		}
	}
	upD, upE := startLLM(t, "up-d"), startLLM(t, "up-e")
	upD.SetBefore(halfThenHang("d"))
	upE.SetBefore(halfThenHang("e"))
	nodes := map[string]*mesh.Node{
		"d": startNode(t, "d", []schema.Model{upstreamModel("m", upD)}, a),
		"e": startNode(t, "e", []schema.Model{upstreamModel("m", upE)}, a),
	}
	waitServes(t, a, "d", "m")
	waitServes(t, a, "e", "m")
	front := startFront(t, a)
	ctx := testCtx(t)
	go func() {
		select {
		case name := <-dying:
			time.Sleep(20 * time.Millisecond) // let the head and the half body reach a
			nodes[name].Close()
		case <-ctx.Done():
		}
	}()
	var resp *http.Response
	cl := newClient(front)
	out, err := cl.Chat.Completions.New(ctx, chatParams("m"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("want the other node's answer, got %v", err)
	}
	if armed.Load() {
		t.Fatal("no node died mid-response; the test did not exercise the retry")
	}
	served := servedBy(resp)
	if want := "reply from up-" + served; out.Choices[0].Message.Content != want {
		t.Fatalf("content %q from node %q, want %q", out.Choices[0].Message.Content, served, want)
	}
}

func TestProxyCancelReachesUpstream(t *testing.T) {
	_, _, up, front := twoNodes(t)
	cl := newClient(front)

	t.Run("stream", func(t *testing.T) {
		up.SetBetween(func(r *http.Request, i int) {
			if i == 0 {
				<-r.Context().Done()
			}
		})
		ctx, cancel := context.WithCancel(testCtx(t))
		st := cl.Chat.Completions.NewStreaming(ctx, chatParams("m"))
		if !st.Next() {
			t.Fatalf("no first chunk: %v", st.Err())
		}
		cancel()
		for st.Next() {
		}
		st.Close()
		select {
		case <-up.Cancelled():
		case <-time.After(5 * time.Second):
			t.Fatal("the client's cancel did not reach the upstream")
		}
	})

	t.Run("plain", func(t *testing.T) {
		up.SetBetween(nil)
		up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
			<-r.Context().Done()
			return true
		})
		ctx, cancel := context.WithCancel(testCtx(t))
		done := make(chan error, 1)
		go func() {
			_, err := cl.Chat.Completions.New(ctx, chatParams("m"))
			done <- err
		}()
		for call := range up.Arrived() {
			if !bytes.Contains(call.Body, []byte(`"stream"`)) {
				break // skip the stream subtest's call
			}
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("cancelled request succeeded")
		}
		select {
		case <-up.Cancelled():
		case <-time.After(5 * time.Second):
			t.Fatal("the client's cancel did not reach the upstream")
		}
	})
}

// An upstream that turns a request away (429, 502, 503) before any byte
// reached the client sends it to the next node; the last node's answer is
// passed on as it is.
func TestProxyFailoverOnUpstreamRefusal(t *testing.T) {
	// a serves m itself (RTT 0, so it is always tried first) through upB;
	// c serves it through upC.
	upB, upC := startLLM(t, "up-b"), startLLM(t, "up-c")
	c := startNode(t, "c", []schema.Model{upstreamModel("m", upC)})
	a := startNode(t, "a", []schema.Model{upstreamModel("m", upB)}, c)
	waitServes(t, a, "c", "m")
	cl := newClient(startFront(t, a))
	ctx := testCtx(t)
	refuse := func(status int) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"message":"refused with %d","type":"server_error","param":null,"code":"busy"}}`, status)
			return true
		}
	}

	for _, status := range []int{http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable} {
		upB.SetBefore(refuse(status))
		bBefore := len(upB.Calls())
		for i := 0; i < 2; i++ {
			var resp *http.Response
			out, err := cl.Chat.Completions.New(ctx, chatParams("m"), option.WithResponseInto(&resp))
			if err != nil {
				t.Fatalf("b answering %d: %v", status, err)
			}
			if servedBy(resp) != "c" || out.Choices[0].Message.Content != "reply from up-c" {
				t.Fatalf("b answering %d: %q from %q", status, out.Choices[0].Message.Content, servedBy(resp))
			}
			text, _, err := streamText(ctx, cl, chatParams("m"))
			if err != nil || text != "reply from up-c" {
				t.Fatalf("b answering %d, stream: %q %v", status, text, err)
			}
		}
		if n := len(upB.Calls()) - bBefore; n != 4 {
			t.Fatalf("b answering %d was asked %d times, want 4 (every request tried there first)", status, n)
		}
	}

	// A 500 may mean the model ran: it is not retried elsewhere.
	upB.SetBefore(refuse(http.StatusInternalServerError))
	upC.SetBefore(refuse(http.StatusInternalServerError))
	bBefore, cBefore := len(upB.Calls()), len(upC.Calls())
	_, err := cl.Chat.Completions.New(ctx, chatParams("m"))
	wantAPIError(t, err, http.StatusInternalServerError, "busy", "refused with 500")
	if n := len(upB.Calls()) - bBefore + len(upC.Calls()) - cBefore; n != 1 {
		t.Fatalf("a 500 reached %d upstreams, want 1", n)
	}

	// Both refuse: each is asked once and the client gets the last answer.
	upC.SetBefore(refuse(http.StatusServiceUnavailable))
	upB.SetBefore(refuse(http.StatusServiceUnavailable))
	bBefore, cBefore = len(upB.Calls()), len(upC.Calls())
	_, err = cl.Chat.Completions.New(ctx, chatParams("m"))
	wantAPIError(t, err, http.StatusServiceUnavailable, "busy", "refused with 503")
	if len(upB.Calls())-bBefore != 1 || len(upC.Calls())-cBefore != 1 {
		t.Fatalf("b asked %d times, c %d; want once each", len(upB.Calls())-bBefore, len(upC.Calls())-cBefore)
	}
}

// The relay between the front and the serving node dies mid-stream: the
// client gets an error event at once, and the serving node's upstream
// request is cancelled.
func TestProxyRelayDiesMidStream(t *testing.T) {
	up := startLLM(t, "up-c")
	b := startNode(t, "b", nil)
	a := startNode(t, "a", nil, b)
	startNode(t, "c", []schema.Model{upstreamModel("m", up)}, b)
	waitServes(t, a, "c", "m")
	if p, _ := a.Peer("c"); p.Status != mesh.StatusRelay {
		t.Fatalf("a reaches c as %q, want relay", p.Status)
	}
	cl := newClient(startFront(t, a))
	ctx := testCtx(t)

	up.SetReply(mockllm.Pieces("one ", "two ", "three"))
	up.SetBetween(func(r *http.Request, i int) {
		if i == 1 {
			<-r.Context().Done()
		}
	})
	st := cl.Chat.Completions.NewStreaming(ctx, chatParams("m"))
	defer st.Close()
	text := ""
	var once sync.Once
	for st.Next() {
		text += st.Current().Choices[0].Delta.Content
		if text == "one two " {
			once.Do(func() { go b.Close() })
		}
	}
	if err := st.Err(); err == nil || !strings.Contains(err.Error(), `broke off the response`) || !strings.Contains(err.Error(), "unreachable") || text != "one two " {
		t.Fatalf("stream ended with %v after %q; want an error event after the first two pieces", err, text)
	}
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("c's upstream request was not cancelled when the relay died")
	}
}

// Through a relay too, tool calls pass unchanged and a client's cancel
// reaches the serving node's upstream.
func TestProxyRelayToolCallsAndCancel(t *testing.T) {
	up := startLLM(t, "up-c")
	b := startNode(t, "b", nil)
	a := startNode(t, "a", nil, b)
	startNode(t, "c", []schema.Model{upstreamModel("m", up)}, b)
	waitServes(t, a, "c", "m")
	cl := newClient(startFront(t, a))

	p := chatParams("m")
	p.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name:       "get_weather",
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
	})}
	out, err := cl.Chat.Completions.New(testCtx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if calls := out.Choices[0].Message.ToolCalls; len(calls) != 1 || calls[0].Function.Arguments != `{"city":"Paris"}` {
		t.Fatalf("tool calls through the relay = %+v", out.Choices[0])
	}

	up.SetBetween(func(r *http.Request, i int) {
		if i == 0 {
			<-r.Context().Done()
		}
	})
	ctx, cancel := context.WithCancel(testCtx(t))
	st := cl.Chat.Completions.NewStreaming(ctx, chatParams("m"))
	if !st.Next() {
		t.Fatalf("no first chunk: %v", st.Err())
	}
	cancel()
	for st.Next() {
	}
	st.Close()
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("the client's cancel did not reach c's upstream through the relay")
	}
}

// A serving node that dies after its upstream accepted a streamed request
// (the response head has reached the front) but before the first chunk has
// sent nothing to the client: the stream is served whole by the next node.
func TestProxyStreamFailoverBeforeFirstChunk(t *testing.T) {
	upB, upC := startLLM(t, "up-b"), startLLM(t, "up-c")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", upB)})
	c := startNode(t, "c", []schema.Model{upstreamModel("m", upC)}, b)
	a := startNode(t, "a", nil, b, c)
	waitServes(t, a, "b", "m")
	waitServes(t, a, "c", "m")
	front, err := NewServer(ServerConfig{Node: a, Addr: "127.0.0.1:0", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	heads := make(chan string, 4)
	front.headHook = func(node string, status int) { heads <- node }
	if err := front.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	cl := newClient(front)
	ctx := testCtx(t)

	// The first request's upstream answers 200 text/event-stream at once,
	// then holds back every chunk; its node is closed once that head has
	// reached the front.
	var first atomic.Bool
	held := make(chan string, 1)
	hold := func(name string) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if !first.CompareAndSwap(false, true) {
				return false
			}
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			held <- name
			<-r.Context().Done()
			return true
		}
	}
	upB.SetBefore(hold("b"))
	upC.SetBefore(hold("c"))
	nodes := map[string]*mesh.Node{"b": b, "c": c}
	ups := map[string]*mockllm.Server{"b": upB, "c": upC}
	go func() {
		var name string
		select {
		case name = <-held:
		case <-ctx.Done():
			return
		}
		for {
			select {
			case node := <-heads:
				if node == name {
					nodes[name].Close()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	var resp *http.Response
	text, chunks, err := streamText(ctx, cl, chatParams("m"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("stream failed instead of moving to the next node: %v", err)
	}
	survivor := servedBy(resp)
	dead := map[string]string{"b": "c", "c": "b"}[survivor]
	if dead == "" || text != "reply from up-"+survivor || chunks != 4 {
		t.Fatalf("served by %q: %q in %d chunks", survivor, text, chunks)
	}
	if len(ups[dead].Calls()) != 1 || len(ups[survivor].Calls()) != 1 {
		t.Fatalf("dead %s saw %d calls, survivor %s saw %d", dead, len(ups[dead].Calls()), survivor, len(ups[survivor].Calls()))
	}
	select {
	case <-ups[dead].Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("the closed node's upstream request was not cancelled")
	}
}

// An upstream that streams SSE under another Content-Type still streams to
// the client when the request asked for a stream: the first chunk arrives
// while the upstream is still holding back the rest.
func TestProxyStreamsWithoutEventStreamType(t *testing.T) {
	_, _, up, front := twoNodes(t)
	cl := newClient(front)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gotFirst := make(chan struct{})
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		fl := w.(http.Flusher)
		io.WriteString(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first \"},\"finish_reason\":null}]}\n\n")
		fl.Flush()
		select {
		case <-gotFirst:
		case <-r.Context().Done():
			return true
		}
		io.WriteString(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"second\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
		return true
	})
	st := cl.Chat.Completions.NewStreaming(ctx, chatParams("m"))
	defer st.Close()
	text := ""
	for st.Next() {
		if text == "" {
			close(gotFirst)
		}
		text += st.Current().Choices[0].Delta.Content
	}
	if err := st.Err(); err != nil || text != "first second" {
		t.Fatalf("stream: %q, %v (the first chunk must not wait for the end)", text, err)
	}
}

// A stream that breaks off before its first chunk, with no other node to
// try, is answered with a plain 502: nothing had been sent yet.
func TestProxyStreamBreaksBeforeFirstChunk(t *testing.T) {
	_, _, up, front := twoNodes(t)
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return true
	})
	_, _, err := streamText(testCtx(t), newClient(front), chatParams("m"))
	wantAPIError(t, err, http.StatusBadGateway, codeUpstream, `node "b" broke off the response`)
}

// A streamed request whose upstream answers with a body that is not SSE and
// breaks off halfway: the connection is aborted, so the client sees a cut
// response, never an SSE error event stuck onto a body of another type.
func TestProxyNonSSEStreamBreakAborts(t *testing.T) {
	_, _, up, front := twoNodes(t)
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[`)
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return true
	})
	ctx := testCtx(t)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, front.URL()+"/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the cut response read as complete (status %d): %q", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "data:") {
		t.Fatalf("an SSE event was added to a %s body: %q", resp.Header.Get("Content-Type"), body)
	}
}
