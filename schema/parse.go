package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	sjs "github.com/santhosh-tekuri/jsonschema/v5"
)

// Problem is one thing wrong with a config or with tool arguments.
type Problem struct {
	// Path names the offending value, like "peers[1].url"; "" is the whole
	// document.
	Path string `json:"path"`
	// Message says what is wrong and, where it helps, what to do. It never
	// contains the value of a secret.
	Message string `json:"message"`
}

// String formats the problem as "path: message" (just the message at the root).
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Parse decodes a plugin config, validates it against ConfigSchema and the
// checks a schema cannot express, and fills the defaults (README.md,
// Configuration; the values are the Default* constants of config.go). It
// returns every problem at once, sorted by path, and a nil config if there is
// any.
func Parse(raw []byte) (*Config, []Problem) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, []Problem{{Message: "config is empty: expected a JSON object with at least nodeId and secret"}}
	}
	inst, err := decodeJSON(raw)
	if err != nil {
		return nil, []Problem{{Message: "config is not valid JSON: " + describeJSONError(raw, err)}}
	}
	c := compiledConfigSchema()
	problems, mistyped := validate(c, inst)
	if _, ok := inst.(map[string]any); !ok {
		return nil, problems
	}

	// Values of the wrong type are already reported; null them out so that
	// decoding reaches every well-typed value and the checks below see it.
	for _, ptr := range mistyped {
		setNull(inst, ptr)
	}
	cleaned, err := json.Marshal(inst)
	if err != nil {
		return nil, append(problems, Problem{Message: "config cannot be re-encoded: " + err.Error()})
	}
	cfg := defaultConfig()
	if err := json.Unmarshal(cleaned, &cfg); err != nil {
		// Only values the schema accepts but Go cannot hold get here (an
		// integer beyond 64 bits, say).
		return nil, sortProblems(append(problems, Problem{Message: "config cannot be decoded: " + err.Error()}))
	}
	cfg.fillEmpty()
	cfg.normalize()
	for _, p := range cfg.check() {
		if !covered(problems, p.Path) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, sortProblems(problems)
	}
	return &cfg, nil
}

// covered reports whether a schema problem already speaks for path (at it or
// at one of its ancestors), so a follow-on check would only repeat it.
func covered(problems []Problem, path string) bool {
	for _, q := range problems {
		if q.Path == "" {
			continue
		}
		if path == q.Path || strings.HasPrefix(path, q.Path+".") || strings.HasPrefix(path, q.Path+"[") {
			return true
		}
	}
	return false
}

// validate runs a compiled schema over a decoded instance and turns its
// errors into problems. It also returns the JSON pointers of values that
// have the wrong type.
func validate(c *compiled, inst any) (problems []Problem, mistyped []string) {
	err := c.schema.Validate(inst)
	if err == nil {
		return nil, nil
	}
	var ve *sjs.ValidationError
	if !errors.As(err, &ve) {
		return []Problem{{Message: err.Error()}}, nil
	}
	var walk func(e *sjs.ValidationError)
	walk = func(e *sjs.ValidationError) {
		if len(e.Causes) > 0 {
			for _, cause := range e.Causes {
				walk(cause)
			}
			return
		}
		if strings.HasSuffix(e.KeywordLocation, "/type") {
			mistyped = append(mistyped, e.InstanceLocation)
		}
		problems = append(problems, describeSchemaError(c.doc, inst, e)...)
	}
	walk(ve)
	return sortProblems(problems), mistyped
}

// setNull replaces the value at a JSON pointer with null; the root is left
// alone.
func setNull(inst any, pointer string) {
	if pointer == "" {
		return
	}
	slash := strings.LastIndexByte(pointer, '/')
	last := unescapePointer(pointer[slash+1:])
	switch parent := schemaAt(inst, pointer[:slash]).(type) {
	case map[string]any:
		parent[last] = nil
	case []any:
		if i, err := strconv.Atoi(last); err == nil && i >= 0 && i < len(parent) {
			parent[i] = nil
		}
	}
}

// describeSchemaError turns one validator error into plain problems. It uses
// the keyword and the schema beside it rather than the validator's text, so
// that messages name known fields and allowed values and never echo the
// offending value (it may be a secret).
func describeSchemaError(doc, inst any, e *sjs.ValidationError) []Problem {
	kwLoc := e.KeywordLocation
	slash := strings.LastIndexByte(kwLoc, '/')
	keyword := unescapePointer(kwLoc[slash+1:])
	parent, _ := schemaAt(doc, kwLoc[:max(slash, 0)]).(map[string]any)
	path := instancePath(inst, e.InstanceLocation)
	value := valueAt(inst, e.InstanceLocation)
	obj, _ := value.(map[string]any)

	switch keyword {
	case "required":
		var out []Problem
		for _, name := range stringList(parent["required"]) {
			if _, ok := obj[name]; !ok {
				out = append(out, Problem{joinPath(path, name), "missing required field"})
			}
		}
		if len(out) > 0 {
			return out
		}
	case "additionalProperties":
		known := sortedKeys(mapOf(parent["properties"]))
		var out []Problem
		for _, name := range sortedKeys(obj) {
			if slices.Contains(known, name) {
				continue
			}
			out = append(out, Problem{joinPath(path, name), unknownFieldMessage(name, known)})
		}
		if len(out) > 0 {
			return out
		}
	case "type":
		return []Problem{{path, typeMessage(parent["type"], value)}}
	case "enum":
		return []Problem{{path, "must be one of " + quotedList(parent["enum"])}}
	case "minLength":
		n := numberString(parent["minLength"])
		if n == "1" {
			return []Problem{{path, "must not be empty"}}
		}
		return []Problem{{path, "must be at least " + n + " characters long"}}
	case "maxLength":
		return []Problem{{path, "must be at most " + numberString(parent["maxLength"]) + " characters long"}}
	case "pattern":
		switch parent["pattern"] {
		case nodeIDPattern:
			return []Problem{{path, `may contain only letters, digits, ".", "_" and "-"`}}
		case wsURLPattern:
			return []Problem{{path, "must start with ws:// or wss://"}}
		case httpURLPattern:
			return []Problem{{path, "must start with http:// or https://"}}
		case publicKeyPattern:
			return []Problem{{path, `must be "ed25519:" and 44 base64 characters, as clawmatrix-plugin identity prints it on that node`}}
		case toolPolicyPattern:
			return []Problem{{path, `must be a tool name (letters, digits and "_", like exec or web_fetch) or "*"`}}
		case allowFromPattern:
			return []Problem{{path, `must be a node id, "tag:<tag>" or "*"`}}
		case envNamePattern:
			return []Problem{{path, `must be an environment variable name (letters, digits and "_", not starting with a digit)`}}
		}
		return []Problem{{path, fmt.Sprintf("must match the pattern %s", parent["pattern"])}}
	case "minimum":
		return []Problem{{path, fmt.Sprintf("must be at least %s (got %s)", numberString(parent["minimum"]), numberString(value))}}
	case "maximum":
		return []Problem{{path, fmt.Sprintf("must be at most %s (got %s)", numberString(parent["maximum"]), numberString(value))}}
	case "minItems":
		if n := numberString(parent["minItems"]); n != "1" {
			return []Problem{{path, "must list at least " + n + " values"}}
		}
		return []Problem{{path, "must not be empty"}}
	case "uniqueItems":
		return []Problem{{path, "must not list the same value twice"}}
	}
	// A keyword this package does not generate: the validator's own words.
	return []Problem{{path, e.Message}}
}

func unknownFieldMessage(name string, known []string) string {
	msg := fmt.Sprintf("unknown field %q", name)
	if s := closest(name, known); s != "" {
		return msg + fmt.Sprintf(" (did you mean %q?)", s)
	}
	if len(known) == 0 {
		return msg + " (this object takes no fields)"
	}
	return msg + " (known fields: " + strings.Join(known, ", ") + ")"
}

// closest returns the known name a typo most likely meant: the same name in
// another case, a known name it abbreviates ("peer" for peers, "cmd" for
// command), or one within two edits.
func closest(name string, known []string) string {
	lname := strings.ToLower(name)
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	if len(name) >= 3 {
		abbrev := ""
		for _, k := range known {
			lk := strings.ToLower(k)
			if lk[0] == lname[0] && isSubsequence(lname, lk) && (abbrev == "" || len(k) < len(abbrev)) {
				abbrev = k
			}
		}
		if abbrev != "" {
			return abbrev
		}
	}
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(lname, strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func isSubsequence(short, long string) bool {
	i := 0
	for j := 0; i < len(short) && j < len(long); j++ {
		if short[i] == long[j] {
			i++
		}
	}
	return i == len(short)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func typeMessage(want, got any) string {
	var wants []string
	switch w := want.(type) {
	case string:
		wants = []string{w}
	case []any:
		wants = stringList(w)
	}
	if len(wants) == 1 && wants[0] == "integer" && jsonTypeOf(got) == "number" {
		return "must be a whole number"
	}
	names := make([]string, len(wants))
	for i, w := range wants {
		names[i] = typeNoun(w)
	}
	return fmt.Sprintf("must be %s, not %s", strings.Join(names, " or "), typeNoun(jsonTypeOf(got)))
}

func typeNoun(t string) string {
	switch t {
	case "object":
		return "an object"
	case "array":
		return "a list"
	case "string":
		return "a string"
	case "integer":
		return "a whole number"
	case "number":
		return "a number"
	case "boolean":
		return "true or false"
	case "null":
		return "null"
	}
	return t
}

func jsonTypeOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		if _, err := v.Int64(); err == nil {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// instancePath converts a JSON pointer into the instance to the Problem.Path
// style: "/peers/1/url" becomes "peers[1].url".
func instancePath(inst any, pointer string) string {
	if pointer == "" || pointer == "/" {
		return ""
	}
	path := ""
	cur := inst
	for _, seg := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		seg = unescapePointer(seg)
		switch v := cur.(type) {
		case []any:
			path += "[" + seg + "]"
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(v) {
				cur = nil
			} else {
				cur = v[i]
			}
		case map[string]any:
			path = joinPath(path, seg)
			cur = v[seg]
		default:
			path = joinPath(path, seg)
			cur = nil
		}
	}
	return path
}

var plainKey = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$-]*$`)

// joinPath appends an object key to a path, quoting keys that would be
// ambiguous in dotted form.
func joinPath(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func valueAt(inst any, pointer string) any {
	return schemaAt(inst, pointer)
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func quotedList(v any) string {
	list, _ := v.([]any)
	parts := make([]string, len(list))
	for i, x := range list {
		b, _ := json.Marshal(x)
		parts[i] = string(b)
	}
	return strings.Join(parts, ", ")
}

func numberString(v any) string {
	switch n := v.(type) {
	case json.Number:
		return n.String()
	case float64:
		return strconv.FormatFloat(n, 'f', -1, 64)
	case nil:
		return "?"
	}
	return fmt.Sprint(v)
}

// describeJSONError says where a syntax error is, by line and column.
func describeJSONError(raw []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(raw, se.Offset)
		return fmt.Sprintf("%s at line %d, column %d", se.Error(), line, col)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "unexpected end of input"
	}
	return err.Error()
}

func lineCol(raw []byte, offset int64) (line, col int) {
	if offset > int64(len(raw)) {
		offset = int64(len(raw))
	}
	before := raw[:max(offset-1, 0)]
	line = bytes.Count(before, []byte("\n")) + 1
	col = len(before) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// sortProblems orders problems by path, array indexes numerically, and drops
// exact duplicates.
func sortProblems(ps []Problem) []Problem {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := comparePaths(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	return slices.Compact(ps)
}

func comparePaths(a, b string) int {
	ta, tb := pathTokens(a), pathTokens(b)
	for i := 0; i < len(ta) && i < len(tb); i++ {
		na, errA := strconv.Atoi(ta[i])
		nb, errB := strconv.Atoi(tb[i])
		if errA == nil && errB == nil {
			if na != nb {
				return na - nb
			}
			continue
		}
		if c := strings.Compare(ta[i], tb[i]); c != 0 {
			return c
		}
	}
	return len(ta) - len(tb)
}

func pathTokens(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '.' || r == '[' || r == ']' })
}
