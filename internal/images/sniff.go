package images

import "bytes"

// LooksRaw tells whether a disk whose first bytes are head (up to 4 KiB)
// and whose last 512 bytes are tail (nil while unknown) is a raw disk, as
// an import would detect it: no other format's magic at its start or its
// end. A stream judged raw by its head must be judged again by its tail
// once it ended (a fixed VHD is raw data and a footer).
func LooksRaw(head, tail []byte) bool {
	buf := make([]byte, 4096+sectorSize)
	copy(buf, head[:min(len(head), 4096)])
	if len(tail) >= sectorSize {
		copy(buf[4096:], tail[len(tail)-sectorSize:])
	}
	f, err := detectReader(bytes.NewReader(buf), int64(len(buf)))
	return err == nil && f == FormatRaw
}
