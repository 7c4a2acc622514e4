package libvirt

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// The storage pool CreateVM puts overlays in unless told otherwise.
const (
	DefaultPool    = "polyvisor"
	DefaultPoolDir = "/var/lib/polyvisor-libvirt"
)

// storagePool returns the pool named (by name or UUID) by datastore, or
// the provider's own directory pool, which is defined, built, started and
// marked autostart when missing. The pool must be active.
func storagePool(l *golibvirt.Libvirt, datastore string) (golibvirt.StoragePool, error) {
	if datastore != "" {
		pool, err := l.StoragePoolLookupByName(datastore)
		if isCode(err, golibvirt.ErrNoStoragePool) {
			if u, uerr := parseUUID(datastore); uerr == nil {
				pool, err = l.StoragePoolLookupByUUID(u)
			}
		}
		if err != nil {
			return pool, fmt.Errorf("look up datastore %q: %w", datastore, classify(err))
		}
		return pool, startPool(l, pool)
	}
	pool, err := l.StoragePoolLookupByName(DefaultPool)
	if err == nil {
		return pool, startPool(l, pool)
	}
	if !isCode(err, golibvirt.ErrNoStoragePool) {
		return pool, fmt.Errorf("look up storage pool %s: %w", DefaultPool, classify(err))
	}
	def := poolXML{Type: "dir", Name: DefaultPool}
	def.Target.Path = DefaultPoolDir
	pool, err = l.StoragePoolDefineXML(marshal(def), 0)
	if err != nil {
		// Defined meanwhile by a concurrent create?
		if again, lerr := l.StoragePoolLookupByName(DefaultPool); lerr == nil {
			return again, startPool(l, again)
		}
		return pool, fmt.Errorf("define storage pool %s: %w", DefaultPool, classify(err))
	}
	if err := l.StoragePoolBuild(pool, 0); err != nil {
		return pool, fmt.Errorf("build storage pool %s at %s: %w", DefaultPool, DefaultPoolDir, classify(err))
	}
	if err := l.StoragePoolSetAutostart(pool, 1); err != nil {
		return pool, fmt.Errorf("set storage pool %s to autostart: %w", DefaultPool, classify(err))
	}
	return pool, startPool(l, pool)
}

// startPool starts an inactive pool.
func startPool(l *golibvirt.Libvirt, pool golibvirt.StoragePool) error {
	active, err := l.StoragePoolIsActive(pool)
	if err != nil {
		return fmt.Errorf("read state of storage pool %s: %w", pool.Name, classify(err))
	}
	if active == 1 {
		return nil
	}
	if err := l.StoragePoolCreate(pool, 0); err != nil {
		if active, aerr := l.StoragePoolIsActive(pool); aerr == nil && active == 1 {
			return nil // started meanwhile
		}
		return fmt.Errorf("start storage pool %s: %w", pool.Name, classify(err))
	}
	return nil
}

// imageInfo returns the format and virtual size of a disk image on the
// libvirt host, as libvirt itself probes them: from the volume when the
// image is in a pool, else through a transient directory pool over the
// image's directory that is destroyed again at once. Giving libvirt the
// backing format matters: without it, it records "raw" for a qcow2 base.
func imageInfo(l *golibvirt.Libvirt, path string) (format string, capacity uint64, err error) {
	vol, err := l.StorageVolLookupByPath(path)
	if err != nil && !isCode(err, golibvirt.ErrNoStorageVol) {
		return "", 0, fmt.Errorf("look up template image %s: %w", path, classify(err))
	}
	if err != nil {
		var suffix [4]byte
		rand.Read(suffix[:])
		def := poolXML{Type: "dir", Name: "polyvisor-probe-" + hex.EncodeToString(suffix[:])}
		def.Target.Path = filepath.Dir(path)
		pool, perr := l.StoragePoolCreateXML(marshal(def), 0)
		if perr != nil {
			return "", 0, fmt.Errorf("read template image %s: %w", path, classify(perr))
		}
		defer l.StoragePoolDestroy(pool)
		vol, err = l.StorageVolLookupByName(pool, filepath.Base(path))
		if err != nil {
			if isCode(err, golibvirt.ErrNoStorageVol) {
				return "", 0, fmt.Errorf("template image %s: %w", path, provider.ErrNotFound)
			}
			return "", 0, fmt.Errorf("look up template image %s: %w", path, classify(err))
		}
	}
	raw, err := l.StorageVolGetXMLDesc(vol, 0)
	if err != nil {
		return "", 0, fmt.Errorf("describe template image %s: %w", path, classify(err))
	}
	var v volumeXML
	if err := unmarshal(raw, &v); err != nil {
		return "", 0, fmt.Errorf("parse template image %s: %w", path, err)
	}
	format = v.Target.Format.Type
	if format == "" || format == "none" {
		format = "raw"
	}
	if format == "dir" {
		return "", 0, fmt.Errorf("template image %s is a directory: %w", path, provider.ErrNotFound)
	}
	if v.Capacity != nil {
		capacity = v.Capacity.bytes("bytes")
	}
	return format, capacity, nil
}

// createOverlay makes a qcow2 volume in pool backed by the image.
func createOverlay(l *golibvirt.Libvirt, pool golibvirt.StoragePool, name, base, baseFormat string, capacity uint64) (golibvirt.StorageVol, string, error) {
	var v volumeXML
	v.Name = name
	v.Capacity = &sizeXML{Unit: "bytes", Value: capacity}
	v.Target.Format.Type = "qcow2"
	v.BackingStore = &backingXML{Path: base}
	v.BackingStore.Format.Type = baseFormat
	vol, err := l.StorageVolCreateXML(pool, marshal(v), 0)
	if err != nil {
		return vol, "", fmt.Errorf("create volume %s in pool %s: %w", name, pool.Name, classify(err))
	}
	path, err := l.StorageVolGetPath(vol)
	if err != nil {
		l.StorageVolDelete(vol, 0)
		return vol, "", fmt.Errorf("read path of volume %s: %w", name, classify(err))
	}
	return vol, path, nil
}
