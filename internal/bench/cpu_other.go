//go:build !unix

package bench

import "time"

// cpuUsed is not measured on this system: it is always 0.
func cpuUsed() time.Duration { return 0 }
