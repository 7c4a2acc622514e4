package bench

import (
	"context"
	"fmt"
	"github.com/polyvisor/polyvisor/api"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// serverPrefix is the key prefix the server keeps its objects under
// (internal/store's DefaultPrefix).
const serverPrefix = "/polyvisor/v1/"

// rawPrefix is where the raw etcd measurement writes: outside the server's
// prefix, so that its watch and index never see these keys.
const rawPrefix = "/polyvisor-bench/"

// EtcdPhase is the raw etcd measurement.
type EtcdPhase struct {
	// Endpoint is the etcd client endpoint used, and Source says which etcd
	// that is.
	Endpoint string `json:"endpoint"`
	Source   string `json:"source"`
	// PayloadBytes is the size of the VM JSON put (a VM as the server
	// stored it), OpPayloadBytes that of the operation of the txn.
	PayloadBytes   int `json:"payloadBytes"`
	OpPayloadBytes int `json:"opPayloadBytes"`
	// Put is plain puts of the VM JSON.
	Put Throughput `json:"put"`
	// Txn is the transaction a VM create commits: create-only puts of a VM
	// and of its operation, in one txn.
	Txn Throughput `json:"txn"`
}

// Throughput is a timed batch of requests.
type Throughput struct {
	Count       int     `json:"count"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"perSecond"`
	Latency     Latency `json:"latency"`
	// CPU is where the machine's CPU went during the batch.
	CPU CPUUse `json:"cpu"`
}

func throughput(ds []time.Duration, conc int, wall time.Duration) Throughput {
	return Throughput{Count: len(ds), Concurrency: conc, Seconds: wall.Seconds(), PerSecond: rate(len(ds), wall), Latency: summarize(ds)}
}

// rawEtcd measures the server's own embedded etcd through the client
// socket it serves on (internal/store serves the embedded etcd's clients on
// <data-dir>/etcd.sock). It puts count copies of a stored VM's JSON, then
// commits count create-shaped txns, with conc concurrent callers on one
// client (as the server has one), and deletes what it wrote.
func rawEtcd(ctx context.Context, meter *cpuMeter, dataDir, vmName, opID string, count, conc int) (EtcdPhase, error) {
	ph := EtcdPhase{
		Endpoint: "unix://" + filepath.Join(dataDir, "etcd.sock"),
		Source:   "the server's own embedded etcd, through its client unix socket <data-dir>/etcd.sock (same process, same disk, same settings)",
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{ph.Endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return ph, fmt.Errorf("connecting to the server's etcd: %w", err)
	}
	defer cli.Close()

	vmJSON, err := getValue(ctx, cli, serverPrefix+"vms/"+api.Key(api.DefaultProject, vmName))
	if err != nil {
		return ph, err
	}
	opJSON, err := getValue(ctx, cli, serverPrefix+"operations/"+opID)
	if err != nil {
		return ph, err
	}
	ph.PayloadBytes, ph.OpPayloadBytes = len(vmJSON), len(opJSON)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = cli.Delete(dctx, rawPrefix, clientv3.WithPrefix())
	}()

	cpu0 := meter.sample()
	ds, wall, err := runConcurrent(ctx, count, conc, func(ctx context.Context, _, i int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("%sput/vm-%06d", rawPrefix, i), vmJSON)
		return err
	})
	if err != nil {
		return ph, fmt.Errorf("raw etcd puts: %w", err)
	}
	ph.Put = throughput(ds, conc, wall)
	ph.Put.CPU = meter.since(cpu0)

	cpu0 = meter.sample()
	ds, wall, err = runConcurrent(ctx, count, conc, func(ctx context.Context, _, i int) error {
		vk := fmt.Sprintf("%stxn/vms/vm-%06d", rawPrefix, i)
		ok := fmt.Sprintf("%stxn/operations/op-%06d", rawPrefix, i)
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(vk), "=", 0), clientv3.Compare(clientv3.CreateRevision(ok), "=", 0)).
			Then(clientv3.OpPut(vk, vmJSON), clientv3.OpPut(ok, opJSON)).
			Else(clientv3.OpGet(vk, clientv3.WithKeysOnly()), clientv3.OpGet(ok, clientv3.WithKeysOnly())).
			Commit()
		if err == nil && !resp.Succeeded {
			err = fmt.Errorf("txn %d: keys exist", i)
		}
		return err
	})
	if err != nil {
		return ph, fmt.Errorf("raw etcd txns: %w", err)
	}
	ph.Txn = throughput(ds, conc, wall)
	ph.Txn.CPU = meter.since(cpu0)
	return ph, nil
}

func getValue(ctx context.Context, cli *clientv3.Client, key string) (string, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("reading %s from etcd: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("reading %s from etcd: not found", key)
	}
	return string(resp.Kvs[0].Value), nil
}
