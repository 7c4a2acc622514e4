package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// serveStream dials the server back for a console stream and connects it
// to the VM's console, or writes the recorded serial log and closes.
func (a *Agent) serveStream(ctx context.Context, req api.StreamRequest) {
	log := a.log.With("vm", req.VM, "console", req.Console, "stream", req.ID)
	c, err := a.streamClient(ctx, req)
	if err != nil {
		log.Warn("dialling back for a console stream", "err", err)
		return
	}
	conn, err := c.DialStream(ctx, req.ID)
	if err != nil {
		log.Warn("dialling back for a console stream", "err", err)
		return
	}
	defer conn.Close()
	if req.Console == "usage" {
		if err := a.serveUsage(conn, req); err != nil {
			log.Warn("usage stream", "err", err)
		}
		return
	}
	if err := a.pipeConsole(ctx, conn, req); err != nil {
		log.Warn("console stream", "err", err)
		_, _ = fmt.Fprintf(conn, "\r\npolyvisor: %v\r\n", err)
	}
}

func (a *Agent) pipeConsole(ctx context.Context, conn net.Conn, req api.StreamRequest) error {
	w, ok := a.worker(req.VM)
	var h *hypervisor.Handle
	if ok {
		h = w.currentHandle()
	}
	if h == nil {
		return fmt.Errorf("vm %q has no console on this host", req.VM)
	}
	if req.Console == "stats" {
		st, ok := a.driver.(hypervisor.Statser)
		if !ok {
			return fmt.Errorf("driver %s reports no usage: %w", a.driver.Name(), hypervisor.ErrNotSupported)
		}
		sample, err := st.Stats(ctx, h)
		if err != nil {
			return err
		}
		return json.NewEncoder(conn).Encode(api.VMStats{Time: time.Now().UTC(), CPUSeconds: sample.CPUSeconds, MemoryBytes: sample.MemoryBytes})
	}
	cons, ok := a.driver.(hypervisor.Consoler)
	if !ok {
		return fmt.Errorf("driver %s offers no console: %w", a.driver.Name(), hypervisor.ErrNotSupported)
	}
	if req.Console == "log" {
		data, err := cons.ConsoleLog(ctx, h, req.Bytes)
		if err != nil {
			return err
		}
		_, err = conn.Write(data)
		return err
	}
	c, err := cons.OpenConsole(ctx, h, req.Console)
	if err != nil {
		return err
	}
	defer c.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(c, conn); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, c); done <- struct{}{} }()
	<-done
	return nil
}
