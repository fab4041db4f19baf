package jsonscan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

type member struct {
	key, val string
	off      int
}

func walk(d string) ([]member, error) {
	var ms []member
	err := WalkObject([]byte(d), func(key, val []byte, off int) error {
		ms = append(ms, member{string(key), string(val), off})
		return nil
	})
	return ms, err
}

func TestWalkObject(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	atLimit := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	tests := []struct {
		name string
		in   string
		want []member
		err  error
	}{
		{name: "empty", in: `{}`},
		{name: "spaces", in: " \t\r\n{ } \n"},
		{name: "members in order", in: `{"a":1,"b":"x"}`, want: []member{{"a", "1", 5}, {"b", `"x"`, 11}}},
		{name: "spaced", in: ` { "a" : 1 , "b":[1,{"c":"}"}], "d":"q\"x", "e":null, "f":true} `,
			want: []member{{"a", "1", 9}, {"b", `[1,{"c":"}"}]`, 17}, {"d", `"q\"x"`, 36}, {"e", "null", 48}, {"f", "true", 58}}},
		{name: "escaped key", in: `{"mod\u0065l":"m"}`, want: []member{{"model", `"m"`, 14}}},
		{name: "utf-8 key", in: `{"ké":0}`, want: []member{{"ké", "0", 7}}},
		{name: "duplicates kept", in: `{"a":1,"a":2}`, want: []member{{"a", "1", 5}, {"a", "2", 11}}},
		{name: "backslashes before quote", in: `{"a":"x\\","b":"\\\""}`, want: []member{{"a", `"x\\"`, 5}, {"b", `"\\\""`, 15}}},
		{name: "nesting at the limit", in: `{"a":` + atLimit + `}`, want: []member{{"a", atLimit, 5}}},
		{name: "negative exponent", in: `{"n":-1.5E+3}`, want: []member{{"n", "-1.5E+3", 5}}},
		{name: "trailing comma", in: `{"a":1,}`, err: ErrSyntax},
		{name: "no colon", in: `{"a" 1}`, err: ErrSyntax},
		{name: "unclosed array", in: `{"a":[}`, err: ErrSyntax},
		{name: "mismatched closer", in: `{"a":{]}`, err: ErrSyntax},
		{name: "unclosed string", in: `{"a":"x}`, err: ErrSyntax},
		{name: "unclosed object", in: `{"a":1`, err: ErrSyntax},
		{name: "data after", in: `{"a":1} x`, err: ErrSyntax},
		{name: "bad literal", in: `{"a":bogus}`, err: ErrSyntax},
		{name: "missing value", in: `{"a":}`, err: ErrSyntax},
		{name: "unquoted key", in: `{a:1}`, err: ErrSyntax},
		{name: "bad key escape", in: `{"\x":1}`, err: ErrSyntax},
		{name: "too deep", in: `{"a":` + deep + `}`, err: ErrDepth},
		{name: "array", in: `[1]`, err: ErrSyntax},
		{name: "nothing", in: ``, err: ErrSyntax},
		{name: "spaces only", in: `   `, err: ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := walk(tt.in)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("members %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("member %d = %+v, want %+v", i, got[i], tt.want[i])
				}
				if tt.in[got[i].off:got[i].off+len(got[i].val)] != got[i].val {
					t.Fatalf("member %d: offset %d does not point at its value", i, got[i].off)
				}
			}
		})
	}
}

func TestWalkObjectStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	var keys []string
	err := WalkObject([]byte(`{"a":1,"b":2,"c":3}`), func(key, _ []byte, _ int) error {
		keys = append(keys, string(key))
		if string(key) == "b" {
			return stop
		}
		return nil
	})
	if err != stop || strings.Join(keys, ",") != "a,b" {
		t.Fatalf("err %v after keys %v, want the callback's error after a,b", err, keys)
	}
}

func TestSkipValue(t *testing.T) {
	tests := []struct {
		in  string
		end int // -1: error
	}{
		{`"abc" x`, 5},
		{`"a\"b"`, 6},
		{`[1,[2],{"]":"["}] `, 17},
		{`{}`, 2},
		{`true,`, 4},
		{`null}`, 4},
		{`-0.5e-7]`, 7},
		{`123`, 3},
		{``, -1},
		{`,`, -1},
		{`nope`, -1},
		{`[1,2`, -1},
		{`[}`, -1},
		{`]`, -1},
		{`"abc`, -1},
	}
	for _, tt := range tests {
		end, err := SkipValue([]byte(tt.in), 0)
		if tt.end < 0 {
			if err == nil {
				t.Errorf("SkipValue(%q) = %d, want an error", tt.in, end)
			}
			continue
		}
		if err != nil || end != tt.end {
			t.Errorf("SkipValue(%q) = %d, %v, want %d", tt.in, end, err, tt.end)
		}
	}
}

func TestScanString(t *testing.T) {
	tests := []struct {
		in      string
		end     int // -1: error
		escaped bool
	}{
		{`"plain"`, 7, false},
		{`"a\nb" tail`, 6, true},
		{`"\\"x"`, 4, true},
		{`"\\\""`, 6, true},
		{`""`, 2, false},
		{`"open`, -1, false},
		{`x"`, -1, false},
		{``, -1, false},
	}
	for _, tt := range tests {
		end, esc, err := ScanString([]byte(tt.in), 0)
		if tt.end < 0 {
			if err == nil {
				t.Errorf("ScanString(%q) = %d, want an error", tt.in, end)
			}
			continue
		}
		if err != nil || end != tt.end || esc != tt.escaped {
			t.Errorf("ScanString(%q) = %d, %v, %v, want %d, %v", tt.in, end, esc, err, tt.end, tt.escaped)
		}
	}
}

func TestValues(t *testing.T) {
	t.Run("String", func(t *testing.T) {
		for _, tt := range []struct {
			in, want string
			ok       bool
		}{
			{`"abc"`, "abc", true},
			{`null`, "", true},
			{`"q\"\u00e9\n"`, "q\"é\n", true},
			{"\"\xff\"", "\uFFFD", true},
			{"\"ü\"", "ü", true},
			{`"a\x"`, "", false},
			{"\"tab\there\"", "", false}, // raw control byte
			{`"a" `, "", false},
			{`abc`, "", false},
			{`"`, "", false},
			{`1`, "", false},
		} {
			got, err := String([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("String(%q) = %q, %v, want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		}
	})
	t.Run("Int", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want int64
			ok   bool
		}{
			{`0`, 0, true}, {`-12`, -12, true}, {`null`, 0, true},
			{`9223372036854775807`, 1<<63 - 1, true},
			{`9223372036854775808`, 0, false}, {`+1`, 0, false}, {`007`, 0, false},
			{`-`, 0, false}, {`1.0`, 0, false}, {`1e3`, 0, false}, {`"1"`, 0, false}, {``, 0, false},
		} {
			got, err := Int([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("Int(%q) = %d, %v, want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		}
	})
	t.Run("Uint", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want uint64
			ok   bool
		}{
			{`0`, 0, true}, {`18446744073709551615`, 1<<64 - 1, true}, {`null`, 0, true},
			{`-1`, 0, false}, {`-0`, 0, false}, {`+1`, 0, false}, {`01`, 0, false}, {`18446744073709551616`, 0, false},
		} {
			got, err := Uint([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("Uint(%q) = %d, %v, want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		}
	})
	t.Run("Bool", func(t *testing.T) {
		for _, tt := range []struct {
			in       string
			want, ok bool
		}{
			{`true`, true, true}, {`false`, false, true}, {`null`, false, true},
			{`1`, false, false}, {`"true"`, false, false}, {`True`, false, false},
		} {
			got, err := Bool([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("Bool(%q) = %v, %v, want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		}
	})
	t.Run("Bytes", func(t *testing.T) {
		for _, tt := range []struct {
			in, want string
			ok       bool
		}{
			{`"aGk="`, "hi", true},
			{`"aGk\u003d"`, "hi", true}, // escaped, as another encoder may write it
			{`""`, "", true},
			{`null`, "", true},
			{`"aGk"`, "", false},
			{`"!!!!"`, "", false},
			{`aGk=`, "", false},
		} {
			got, err := Bytes([]byte(tt.in))
			if (err == nil) != tt.ok || string(got) != tt.want {
				t.Errorf("Bytes(%q) = %q, %v, want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		}
	})
}

// stdMembers lists the top-level members of a valid JSON object with
// encoding/json, in order.
func stdMembers(d []byte) ([]member, bool) {
	dec := json.NewDecoder(bytes.NewReader(d))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var ms []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		end := int(dec.InputOffset())
		ms = append(ms, member{tok.(string), string(raw), end - len(raw)})
	}
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return ms, true
}

// FuzzWalkObject: the walker never panics, and on every valid JSON object
// (within MaxDepth) it yields exactly the members encoding/json finds, at
// the same offsets. The string helpers agree with encoding/json too.
func FuzzWalkObject(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, ` { "a" : [1,{"b":"}"}] , "c":"q\"x\\" } `, `{"mod\u0065l":"m","model":null}`,
		`{"a":1,"a":2}`, `{"x":"\ud83d\ude00","y":-1.5e+3,"z":[true,false,null]}`, `{"a":[}`, `{"a":1,}`,
		`{"type":"res","id":"k","from":"a","to":"c","ttl":3,"timestamp":1,"payload":{"s":1,"q":2,"d":"aGk=","more":true}}`,
		`[1]`, `"s"`, `{"a":"` + "\xff" + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		var got []member
		err := WalkObject(d, func(key, val []byte, off int) error {
			if !bytes.Equal(d[off:off+len(val)], val) {
				t.Fatalf("offset %d does not point at value %q", off, val)
			}
			if s, err := String(val); err == nil && !IsNull(val) {
				var want string
				if json.Unmarshal(val, &want) != nil || want != s {
					t.Fatalf("String(%q) = %q, encoding/json says %q", val, s, want)
				}
			}
			got = append(got, member{string(key), string(val), off})
			return nil
		})
		if !json.Valid(d) {
			return
		}
		want, isObject := stdMembers(d)
		if !isObject {
			if err == nil {
				t.Fatalf("%q: walker accepted a valid non-object", d)
			}
			return
		}
		if errors.Is(err, ErrDepth) {
			return
		}
		if err != nil {
			t.Fatalf("%q: valid object refused: %v", d, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: members %+v, encoding/json %+v", d, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%q: member %d = %+v, encoding/json %+v", d, i, got[i], want[i])
			}
		}
	})
}

var benchFrame = func() []byte {
	data := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("chunk of a file "), 1024))
	return []byte(`{"type":"res","id":"k7","from":"node-a","to":"node-c","ttl":7,"timestamp":1700000000000,"payload":{"s":42,"q":9,"d":"` + data + `","more":true}}`)
}()

var benchChat = func() []byte {
	msgs := strings.Repeat(`{"role":"user","content":"Summarise the \"design\" notes in three lines, please."},`, 40)
	return []byte(`{"messages":[` + msgs + `{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"stream":true,"model":"gpt-4o-mini"}`)
}()

// BenchmarkWalkObject walks a 22 KB frame envelope and a 3.5 KB chat
// request, reading their top-level keys only.
func BenchmarkWalkObject(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    []byte
	}{{"frame", benchFrame}, {"chat", benchChat}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.d)))
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				if err := WalkObject(bc.d, func(_, _ []byte, _ int) error { n++; return nil }); err != nil || n == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

// AppendString writes what encoding/json writes, on the fast path and off it.
func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "Content-Type", `a"b`, `back\slash`, "<tag>&", "tab\there", "ünï", "\x00\x1f", "bad \xff utf-8", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("AppendString(%q) = %s, want x%s", s, got, want)
		}
	}
}
