package mesh

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

func cloneCaps(c Capabilities) Capabilities {
	out := Capabilities{
		Agents: make([]AgentInfo, len(c.Agents)),
		Models: append([]ModelInfo{}, c.Models...),
		Tags:   append([]string{}, c.Tags...),
	}
	if c.Features != nil {
		out.Features = append([]string{}, c.Features...)
	}
	for i, a := range c.Agents {
		a.Tags = append([]string(nil), a.Tags...)
		out.Agents[i] = a
	}
	if c.Load != nil {
		l := *c.Load
		out.Load = &l
	}
	return out
}

// checkCaps bounds what a peer may announce.
func checkCaps(c *Capabilities) error {
	const maxItems, maxStr = 1024, 4096
	if len(c.Agents) > maxItems || len(c.Models) > maxItems || len(c.Tags) > maxItems || len(c.Features) > maxItems {
		return fmt.Errorf("more than %d agents, models, tags or features", maxItems)
	}
	long := func(s string) bool { return len(s) > maxStr }
	for _, a := range c.Agents {
		if long(a.ID) || long(a.Description) || len(a.Tags) > maxItems {
			return errors.New("agent entry too long")
		}
	}
	for _, m := range c.Models {
		if long(m.ID) || long(m.Provider) || long(m.Description) {
			return errors.New("model entry too long")
		}
	}
	for _, t := range c.Tags {
		if long(t) {
			return errors.New("tag too long")
		}
	}
	for _, f := range c.Features {
		if long(f) {
			return errors.New("feature too long")
		}
	}
	if l := c.Load; l != nil && (l.Running < 0 || l.Queued < 0) {
		return errors.New("negative load")
	}
	return nil
}

// Peer text is data: ids that do not fit the id character set are left
// out, and free text loses control characters and is capped, so that
// nothing a peer announces can start a new line in a prompt or a log.
const (
	maxDescriptionRunes = 200
	maxCapTags          = 32
)

// sanitizeCaps cleans capabilities received from a peer, in place.
func sanitizeCaps(c *Capabilities) {
	agents := c.Agents[:0]
	for _, a := range c.Agents {
		if !ValidCapID(a.ID) {
			continue
		}
		a.Description = cleanText(a.Description, maxDescriptionRunes)
		a.Tags = cleanTags(a.Tags)
		agents = append(agents, a)
	}
	c.Agents = agents
	models := c.Models[:0]
	for _, m := range c.Models {
		if !ValidCapID(m.ID) {
			continue
		}
		if !ValidCapID(m.Provider) {
			m.Provider = ""
		}
		m.Description = cleanText(m.Description, maxDescriptionRunes)
		models = append(models, m)
	}
	c.Models = models
	c.Tags = cleanTags(c.Tags)
	if c.Features != nil {
		c.Features = cleanTags(c.Features)
	}
}

// ValidCapID reports whether s can name an agent, model, provider or tag
// announced by a peer: 1-128 letters, digits, '.', '_', '-', ':' or '/'.
func ValidCapID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}

func cleanTags(tags []string) []string {
	out := tags[:0]
	for _, t := range tags {
		if ValidCapID(t) && len(out) < maxCapTags {
			out = append(out, t)
		}
	}
	return out
}

// cleanText turns control characters (line breaks included) into spaces,
// collapses runs of spaces and caps the text at max runes.
func cleanText(s string, max int) string {
	var b strings.Builder
	runes := 0
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '\u2028' || r == '\u2029' {
			space = b.Len() > 0
			continue
		}
		if runes >= max {
			b.WriteString("…")
			break
		}
		if space {
			b.WriteByte(' ')
			runes++
			space = false
		}
		b.WriteRune(r)
		runes++
	}
	return b.String()
}
