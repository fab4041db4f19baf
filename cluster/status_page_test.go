package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clawmatrix/clawmatrix/internal/mockllm"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the status page screenshot to docs/status-page.png")

// chromium finds the browser scripts/install-chromium.sh installs. Without
// one the test is skipped, unless CLAWMATRIX_REQUIRE_BROWSER is set (as
// make test does), which makes a missing browser a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CLAWMATRIX_REQUIRE_BROWSER") != "" {
		t.Fatal("no chromium found: run scripts/install-chromium.sh (as root), or set CHROMIUM to the browser's path")
	}
	t.Skip("no chromium found; scripts/install-chromium.sh installs it (make test does)")
	return ""
}

// screenshotDir is where the test leaves its screenshots:
// $CLAWMATRIX_SCREENSHOTS (make test sets test-output/), else a temporary
// directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("CLAWMATRIX_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// The status page in a real headless browser: it opens with the one-time
// link, shows the three nodes of a demo-like cluster and a relayed request,
// follows a change of a node's agents (showing peer text as text, never as
// markup), and turns a node that stops into a down node.
func TestStatusPageInBrowser(t *testing.T) {
	browser := chromium(t)
	llm := startMock(t, mockllm.Options{Name: "c", Reply: mockllm.Echo("node c's model answers: ")})
	var logs syncBuffer
	c := startNode(t, fmt.Sprintf(`{"nodeId":"c","secret":%q,"proxyPort":0,"listen":true,"listenHost":"127.0.0.1","listenPort":0,
		"tags":["gpu","linux"],"agents":[{"id":"researcher","description":"digs through data on node c"}],
		"models":[{"id":"demo-llm","provider":"demo","description":"mock model on c","upstream":{"baseUrl":%q}}]}`, testSecret, llm.URL()), &logs)
	b := startNode(t, fmt.Sprintf(`{"nodeId":"b","secret":%q,"proxyPort":0,"listen":true,"listenHost":"127.0.0.1","listenPort":0,
		"tags":["relay"],"peers":[{"url":%q,"nodeId":"c"}]}`, testSecret, c.Mesh().URL()), &logs)
	a := startNode(t, fmt.Sprintf(`{"nodeId":"a","secret":%q,"proxyPort":0,"peers":[{"url":%q,"nodeId":"b"}],
		"agents":[{"id":"main","description":"the user's assistant"}],"proxyModels":[{"id":"demo-llm"}]}`, testSecret, b.Mesh().URL()), &logs)
	waitModelOn(t, a, "c", "demo-llm")

	ctx, cancel := context.WithTimeout(context.Background(), 2*testDeadline)
	defer cancel()
	for range 2 {
		if st, node, _, err := streamChat(ctx, a, "demo-llm", "hello", nil); err != nil || st != 200 || node != "c" {
			t.Fatalf("streamed request: %d from %q, %v", st, node, err)
		}
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()
	// The first Run starts the browser, which lives as long as tab.
	if err := chromedp.Do(tab, chromedp.Navigate(a.StatusLink())); err != nil {
		t.Fatalf("opening the status link in %s: %v", browser, err)
	}
	eval := func(expr string) string {
		t.Helper()
		actx, acancel := context.WithTimeout(tab, 5*time.Second)
		defer acancel()
		v, err := chromedp.Run(actx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluating %s: %v", expr, err)
		}
		return v
	}
	waitPage := func(what, expr, want string) {
		t.Helper()
		deadline := time.Now().Add(testDeadline)
		for {
			got := eval(expr)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the page never showed %s: %s is %q, want %q; the page says:\n%s", what, expr, got, want, eval("document.body.innerText"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cards := `Array.from(document.querySelectorAll("#nodes .card")).map(c => c.dataset.node + ":" + c.dataset.state).join(" ")`
	waitPage("the three nodes", cards, "a:self b:connected c:relay")
	waitPage("the three nodes in the graph", `Array.from(document.querySelectorAll("#graph g[data-node]")).map(g => g.dataset.node + ":" + g.dataset.state).join(" ")`,
		"a:self b:connected c:relay")
	waitPage("both links", `Array.from(document.querySelectorAll("#graph line")).map(l => l.dataset.link + ":" + l.getAttribute("class")).join(" ")`,
		"a-b:direct b-c:remote")
	waitPage("the relayed requests", `Array.from(document.querySelectorAll("#requests tbody tr td.path")).map(td => td.textContent).join("|")`,
		"a → b → c|a → b → c")
	card := `document.querySelector('#nodes .card[data-node="c"]').textContent`
	if got := eval(card); !strings.Contains(got, "researcher — digs through data on node c") || !strings.Contains(got, "demo-llm") || !strings.Contains(got, "gpu, linux") {
		t.Errorf("c's card shows %q; want its agent, model and tags", got)
	}
	if got := eval(`document.getElementById("conn").dataset.state`); got != "live" {
		t.Errorf("the page's connection says %q", got)
	}
	dir := screenshotDir(t)
	shot := func(name string) []byte {
		t.Helper()
		actx, acancel := context.WithTimeout(tab, 10*time.Second)
		defer acancel()
		png, err := chromedp.Run(actx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of the status page: %s (%d bytes)", path, len(png))
		return png
	}
	healthy := shot("status-page.png")
	if *updateScreenshot {
		if err := os.WriteFile("../docs/status-page.png", healthy, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Other nodes choose their descriptions: the page shows them as text.
	const xss = `reads <img src=x onerror="window.pwned=1"> papers`
	caps := c.Mesh().Capabilities()
	caps.Agents[0].Description = xss
	c.Mesh().SetCapabilities(caps)
	waitPage("c's new agent description", `String(`+card+`.includes("researcher — reads <img"))`, "true")
	if got := eval(`String(window.pwned) + "/" + document.querySelectorAll("#nodes img").length`); got != "undefined/0" {
		t.Errorf("a peer's description ran as markup: %s", got)
	}

	c.Close()
	waitPage("c down", cards, "a:self b:connected c:down")
	waitPage("c down in the graph", `document.querySelector('#graph g[data-node="c"]').dataset.state`, "down")
	waitPage("only a — b left", `Array.from(document.querySelectorAll("#graph line")).map(l => l.dataset.link).join(" ")`, "a-b")
	if got := eval(`document.getElementById("errors").textContent`); !strings.Contains(got, "node c became unreachable") {
		t.Errorf("the errors list does not say that c went: %q", got)
	}
	shot("status-page-node-down.png")
	if err := chromedp.Cancel(tab); err != nil {
		t.Errorf("closing the browser: %v", err)
	}
}
