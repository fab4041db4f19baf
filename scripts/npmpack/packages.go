package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// mainPackage is the plugin package that users install.
const mainPackage = "@clawmatrix/openclaw-plugin"

// binName is the sidecar binary, at bin/<binName> in each platform package.
const binName = "clawmatrix-plugin"

// platform is one prebuilt binary: a Go target and the npm os/cpu it fits.
type platform struct {
	goos, goarch string
	os, cpu      string // npm's names: process.platform and process.arch
	label        string
}

// platforms are the prebuilt targets. Windows is not among them: the
// sidecar ends remote commands by process group (cluster/remote/proc.go),
// which Windows lacks; there it runs under WSL as a Linux binary.
var platforms = []platform{
	{"linux", "amd64", "linux", "x64", "Linux x64"},
	{"linux", "arm64", "linux", "arm64", "Linux arm64"},
	{"darwin", "amd64", "darwin", "x64", "macOS x64"},
	{"darwin", "arm64", "darwin", "arm64", "macOS arm64"},
}

// key is the platform's npm suffix, e.g. linux-x64.
func (p platform) key() string { return p.os + "-" + p.cpu }

// packageName is the platform package, e.g. @clawmatrix/openclaw-plugin-linux-x64.
func (p platform) packageName() string { return mainPackage + "-" + p.key() }

func platformsByKey(keys []string) ([]platform, error) {
	var out []platform
	for _, k := range keys {
		i := slices.IndexFunc(platforms, func(p platform) bool { return p.key() == k })
		if i < 0 {
			var known []string
			for _, p := range platforms {
				known = append(known, p.key())
			}
			return nil, fmt.Errorf("-platforms: unknown platform %q (known: %s)", k, strings.Join(known, ", "))
		}
		out = append(out, platforms[i])
	}
	return out, nil
}

// tarballName is the file name npm pack gives a package.
func tarballName(pkg, version string) string {
	return strings.ReplaceAll(strings.TrimPrefix(pkg, "@"), "/", "-") + "-" + version + ".tgz"
}

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

// stampedManifest reads the repository's package.json, checks that it lists
// every platform package at exactly its own version, and returns it with
// the version set to version (all of them, when it is not the file's own)
// and the version it ends up with.
func stampedManifest(raw []byte, version string) ([]byte, string, error) {
	pkg, err := decodeObject(raw)
	if err != nil {
		return nil, "", fmt.Errorf("package.json: %w", err)
	}
	if name, _ := pkg.get("name"); name != mainPackage {
		return nil, "", fmt.Errorf("package.json: name is %v, want %s", name, mainPackage)
	}
	own, _ := pkg.get("version")
	ownVersion, _ := own.(string)
	if !versionRE.MatchString(ownVersion) {
		return nil, "", fmt.Errorf("package.json: version %q is not a version like 1.2.3", ownVersion)
	}
	if err := checkPlatformLists(pkg, ownVersion); err != nil {
		return nil, "", fmt.Errorf("package.json: %w", err)
	}
	if version == "" || version == ownVersion {
		return raw, ownVersion, nil
	}
	if !versionRE.MatchString(version) {
		return nil, "", fmt.Errorf("-version %q is not a version like 1.2.3", version)
	}
	pkg.set("version", version)
	deps, _ := pkg.get("optionalDependencies")
	for i := range deps.(object) {
		deps.(object)[i].Value = version
	}
	out, err := encodeJSON(pkg)
	return out, version, err
}

// checkPlatformLists: optionalDependencies holds every platform package at
// exactly the package's version (so npm installs the binary built with this
// adapter), and openclaw.install.requiredPlatformPackages names the same
// packages (so OpenClaw refuses an install that lacks the host's one).
func checkPlatformLists(pkg object, version string) error {
	var want []string
	for _, p := range platforms {
		want = append(want, p.packageName())
	}
	deps, _ := pkg.get("optionalDependencies")
	depObj, ok := deps.(object)
	if !ok {
		return fmt.Errorf("optionalDependencies is missing; it lists %s at the package's version", strings.Join(want, ", "))
	}
	var got []string
	for _, m := range depObj {
		got = append(got, m.Key)
		if m.Value != version {
			return fmt.Errorf("optionalDependencies[%q] is %v, want %q, the package's version", m.Key, m.Value, version)
		}
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("optionalDependencies lists %v, want exactly %v", got, want)
	}
	oc, _ := pkg.get("openclaw")
	ocObj, _ := oc.(object)
	inst, _ := ocObj.get("install")
	instObj, _ := inst.(object)
	req, _ := instObj.get("requiredPlatformPackages")
	reqList, _ := req.([]any)
	got = got[:0]
	for _, v := range reqList {
		s, _ := v.(string)
		got = append(got, s)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("openclaw.install.requiredPlatformPackages lists %v, want exactly %v", got, want)
	}
	if mh, _ := instObj.get("minHostVersion"); mh == nil {
		return errors.New("openclaw.install.minHostVersion is missing")
	}
	return nil
}

// platformManifest is the package.json of one platform package: npm
// installs it only where os and cpu match, and it carries nothing but the
// binary (no "bin": the adapter finds it; it is not a command for PATH).
func platformManifest(p platform, version string) ([]byte, error) {
	pkg := object{
		{"name", p.packageName()},
		{"version", version},
		{"description", fmt.Sprintf("The clawmatrix-plugin sidecar for %s, installed by %s", p.label, mainPackage)},
		{"os", []any{p.os}},
		{"cpu", []any{p.cpu}},
		{"files", []any{"bin/" + binName}},
	}
	return encodeJSON(pkg)
}

// packageFiles reads what package.json's "files" ships, the way npm pack
// does for plain names: a file, or a folder with everything under it.
func packageFiles(root string, manifest []byte) ([]file, error) {
	var pkg struct {
		Files []string `json:"files"`
	}
	if err := json.Unmarshal(manifest, &pkg); err != nil {
		return nil, fmt.Errorf("package.json: %w", err)
	}
	if len(pkg.Files) == 0 {
		return nil, errors.New("package.json: \"files\" is empty; list what the package ships")
	}
	out := []file{{name: "package.json", mode: 0o644, data: manifest}}
	for _, name := range pkg.Files {
		if strings.ContainsAny(name, "*?[") || filepath.IsAbs(name) || strings.Contains(name, "..") {
			return nil, fmt.Errorf("package.json: \"files\" entry %q: only plain paths inside the repository are packed", name)
		}
		err := filepath.WalkDir(filepath.Join(root, name), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			if !d.Type().IsRegular() {
				return fmt.Errorf("%s is not a regular file", path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			out = append(out, file{name: filepath.ToSlash(rel), mode: 0o644, data: data})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("package.json: \"files\" entry %q: %w", name, err)
		}
	}
	return out, nil
}
