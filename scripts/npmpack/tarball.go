package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"slices"
	"strings"
	"time"
)

// packTime is the modification time of every file in a tarball: the one npm
// itself writes, so nothing in a package depends on when it was built.
var packTime = time.Date(1985, time.October, 26, 8, 15, 0, 0, time.UTC)

// file is one file of a package, named relative to the package root.
type file struct {
	name string
	mode int64 // 0o644, or 0o755 for the binary
	data []byte
}

// tarball returns the gzipped tar of files under package/, as npm pack lays
// it out, byte for byte the same for the same files: entries sorted by
// name, one fixed time, owner root with no names, no directory entries, and
// a gzip header without a name or time.
func tarball(files []file) ([]byte, error) {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for i, f := range files {
		if i > 0 && files[i-1].name == f.name {
			return nil, fmt.Errorf("%s is in the package twice", f.name)
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     "package/" + f.name,
			Mode:     f.mode,
			Size:     int64(len(f.data)),
			ModTime:  packTime,
			Format:   tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
