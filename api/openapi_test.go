package api_test

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// openAPI decodes the embedded document.
func openAPI(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	return doc
}

// resolve follows a local JSON pointer ("#/components/schemas/VM").
func resolve(doc map[string]any, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	var cur any = doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// walk calls f on every object of v, with its JSON pointer.
func walk(v any, at string, f func(at string, m map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		f(at, v)
		for k, e := range v {
			walk(e, at+"/"+k, f)
		}
	case []any:
		for _, e := range v {
			walk(e, at+"/[]", f)
		}
	}
}

func TestOpenAPIIsOpenAPI3AndRefsResolve(t *testing.T) {
	doc := openAPI(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0.") {
		t.Errorf("openapi = %q, want 3.0.x", v)
	}
	for _, key := range []string{"info", "paths", "components"} {
		if _, ok := doc[key].(map[string]any); !ok {
			t.Errorf("no %s object", key)
		}
	}
	refs := 0
	walk(doc, "#", func(at string, m map[string]any) {
		ref, ok := m["$ref"].(string)
		if !ok {
			return
		}
		refs++
		if _, ok := resolve(doc, ref); !ok {
			t.Errorf("%s: $ref %q does not resolve", at, ref)
		}
		if len(m) > 1 {
			t.Errorf("%s: $ref %q has siblings, which OpenAPI 3.0 ignores", at, ref)
		}
	})
	if refs == 0 {
		t.Error("no $ref at all")
	}
	schemes, _ := resolve(doc, "#/components/securitySchemes/bearerAuth")
	if s, _ := schemes.(map[string]any); s["type"] != "http" || s["scheme"] != "bearer" {
		t.Errorf("bearerAuth = %v", schemes)
	}
}

var methods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

// docRoutes reads the route table of docs/API.md as "METHOD /path".
func docRoutes(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/API.md")
	if err != nil {
		t.Fatalf("read the route table: %v", err)
	}
	row := regexp.MustCompile("(?m)^\\|\\s*(GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS)\\s*\\|\\s*(/\\S*)\\s*\\|")
	var routes []string
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		routes = append(routes, m[1]+" "+m[2])
	}
	if len(routes) < 10 {
		t.Fatalf("found only %d routes in docs/API.md", len(routes))
	}
	sort.Strings(routes)
	return routes
}

func TestOpenAPIListsExactlyTheDocumentedRoutes(t *testing.T) {
	doc := openAPI(t)
	paths := doc["paths"].(map[string]any)
	var got []string
	opIDs := map[string]string{}
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range paths {
		item := item.(map[string]any)
		for _, m := range methods {
			op, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			route := strings.ToUpper(m) + " " + path
			got = append(got, route)
			if id, _ := op["operationId"].(string); id == "" {
				t.Errorf("%s: no operationId", route)
			} else if prev, dup := opIDs[id]; dup {
				t.Errorf("%s: operationId %q already used by %s", route, id, prev)
			} else {
				opIDs[id] = route
			}
			if rs, _ := op["responses"].(map[string]any); len(rs) == 0 {
				t.Errorf("%s: no responses", route)
			}
			// Every {param} of the path is declared, and nothing more.
			declared := map[string]bool{}
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, p := range ps {
					pm := p.(map[string]any)
					if ref, ok := pm["$ref"].(string); ok {
						r, _ := resolve(doc, ref)
						pm, _ = r.(map[string]any)
					}
					if pm["in"] == "path" {
						declared[pm["name"].(string)] = true
						if pm["required"] != true {
							t.Errorf("%s: path parameter %v is not required", route, pm["name"])
						}
					}
				}
			}
			var want []string
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				want = append(want, m[1])
				if !declared[m[1]] {
					t.Errorf("%s: path parameter {%s} not declared", route, m[1])
				}
			}
			for name := range declared {
				if !slices.Contains(want, name) {
					t.Errorf("%s: declares path parameter %q the path lacks", route, name)
				}
			}
		}
	}
	sort.Strings(got)
	want := docRoutes(t)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes of openapi.json:\n  %s\nroutes of docs/API.md:\n  %s",
			strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// jsonFields lists the JSON names of a struct type's fields, embedded
// structs inlined.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			names = append(names, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// schemaFields lists a schema's properties, allOf parts inlined, and its
// required names.
func schemaFields(t *testing.T, doc map[string]any, s map[string]any) (props, required []string) {
	t.Helper()
	if ref, ok := s["$ref"].(string); ok {
		r, _ := resolve(doc, ref)
		return schemaFields(t, doc, r.(map[string]any))
	}
	for _, part := range asSlice(s["allOf"]) {
		p, r := schemaFields(t, doc, part.(map[string]any))
		props, required = append(props, p...), append(required, r...)
	}
	pm, _ := s["properties"].(map[string]any)
	for name := range pm {
		props = append(props, name)
	}
	for _, r := range asSlice(s["required"]) {
		required = append(required, r.(string))
	}
	return props, required
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func TestOpenAPISchemasMatchWireTypes(t *testing.T) {
	doc := openAPI(t)
	types := map[string]reflect.Type{
		"Error":            reflect.TypeFor[api.Error](),
		"ErrorBody":        reflect.TypeFor[api.ErrorBody](),
		"Meta":             reflect.TypeFor[api.Meta](),
		"VM":               reflect.TypeFor[api.VM](),
		"VMSpec":           reflect.TypeFor[api.VMSpec](),
		"Disk":             reflect.TypeFor[api.Disk](),
		"NIC":              reflect.TypeFor[api.NIC](),
		"Boot":             reflect.TypeFor[api.Boot](),
		"CloudInit":        reflect.TypeFor[api.CloudInit](),
		"Deletion":         reflect.TypeFor[api.Deletion](),
		"VMStatus":         reflect.TypeFor[api.VMStatus](),
		"VMError":          reflect.TypeFor[api.VMError](),
		"Console":          reflect.TypeFor[api.Console](),
		"DiskStatus":       reflect.TypeFor[api.DiskStatus](),
		"VMCreate":         reflect.TypeFor[api.VMCreate](),
		"VMStop":           reflect.TypeFor[api.VMStop](),
		"VMStats":          reflect.TypeFor[api.VMStats](),
		"UsageHistory":     reflect.TypeFor[api.UsageHistory](),
		"UsagePoint":       reflect.TypeFor[api.UsagePoint](),
		"UsageQuery":       reflect.TypeFor[api.UsageQuery](),
		"UsageAnswer":      reflect.TypeFor[api.UsageAnswer](),
		"VMList":           reflect.TypeFor[api.List[api.VM]](),
		"Host":             reflect.TypeFor[api.Host](),
		"HostSpec":         reflect.TypeFor[api.HostSpec](),
		"HostStatus":       reflect.TypeFor[api.HostStatus](),
		"HostConfinement":  reflect.TypeFor[api.HostConfinement](),
		"HostKeeper":       reflect.TypeFor[api.HostKeeper](),
		"Allocation":       reflect.TypeFor[api.Allocation](),
		"HostCapacity":     reflect.TypeFor[api.HostCapacity](),
		"HostList":         reflect.TypeFor[api.List[api.Host]](),
		"JoinToken":        reflect.TypeFor[api.JoinToken](),
		"JoinTokenCreate":  reflect.TypeFor[api.JoinTokenCreate](),
		"AgentRegister":    reflect.TypeFor[api.AgentRegister](),
		"AgentCredentials": reflect.TypeFor[api.AgentCredentials](),
		"AgentMessage":     reflect.TypeFor[api.AgentMessage](),
		"StreamRequest":    reflect.TypeFor[api.StreamRequest](),
		"Image":            reflect.TypeFor[api.Image](),
		"ImageCreate":      reflect.TypeFor[api.ImageCreate](),
		"ImageUpdate":      reflect.TypeFor[api.ImageUpdate](),
		"ImageSettings":    reflect.TypeFor[api.ImageSettings](),
		"ImageList":        reflect.TypeFor[api.List[api.Image]](),
		"Operation":        reflect.TypeFor[api.Operation](),
		"OperationList":    reflect.TypeFor[api.List[api.Operation]](),
		"Ref":              reflect.TypeFor[api.Ref](),
		"Event":            reflect.TypeFor[api.Event](),
		// Providers (connected estates) and what their VMs offer.
		"Provider":             reflect.TypeFor[api.Provider](),
		"ProviderSpec":         reflect.TypeFor[api.ProviderSpec](),
		"ProviderStatus":       reflect.TypeFor[api.ProviderStatus](),
		"ProviderCounts":       reflect.TypeFor[api.ProviderCounts](),
		"ProviderCapabilities": reflect.TypeFor[api.ProviderCapabilities](),
		"ProviderCreate":       reflect.TypeFor[api.ProviderCreate](),
		"ProviderRef":          reflect.TypeFor[api.ProviderRef](),
		"ProviderList":         reflect.TypeFor[api.List[api.Provider]](),
		"ProviderInventory":    reflect.TypeFor[api.ProviderInventory](),
		"InventoryItem":        reflect.TypeFor[api.InventoryItem](),
		"Snapshot":             reflect.TypeFor[api.Snapshot](),
		"SnapshotList":         reflect.TypeFor[api.List[api.Snapshot]](),
		"SnapshotCreate":       reflect.TypeFor[api.SnapshotCreate](),
		"VMReconfigure":        reflect.TypeFor[api.VMReconfigure](),
		"ConsoleTicket":        reflect.TypeFor[api.ConsoleTicket](),
		// Projects, users, tokens, the audit log and leases.
		"Project":         reflect.TypeFor[api.Project](),
		"ProjectSpec":     reflect.TypeFor[api.ProjectSpec](),
		"ProjectStatus":   reflect.TypeFor[api.ProjectStatus](),
		"Quota":           reflect.TypeFor[api.Quota](),
		"Usage":           reflect.TypeFor[api.Usage](),
		"ProjectCreate":   reflect.TypeFor[api.ProjectCreate](),
		"ProjectUpdate":   reflect.TypeFor[api.ProjectUpdate](),
		"ProjectList":     reflect.TypeFor[api.List[api.Project]](),
		"Member":          reflect.TypeFor[api.Member](),
		"MemberSet":       reflect.TypeFor[api.MemberSet](),
		"MemberList":      reflect.TypeFor[api.List[api.Member]](),
		"QuotaReport":     reflect.TypeFor[api.QuotaReport](),
		"User":            reflect.TypeFor[api.User](),
		"UserCreate":      reflect.TypeFor[api.UserCreate](),
		"UserUpdate":      reflect.TypeFor[api.UserUpdate](),
		"UserList":        reflect.TypeFor[api.List[api.User]](),
		"PasswordSet":     reflect.TypeFor[api.PasswordSet](),
		"Login":           reflect.TypeFor[api.Login](),
		"Session":         reflect.TypeFor[api.Session](),
		"Token":           reflect.TypeFor[api.Token](),
		"TokenCreate":     reflect.TypeFor[api.TokenCreate](),
		"TokenCreated":    reflect.TypeFor[api.TokenCreated](),
		"TokenList":       reflect.TypeFor[api.List[api.Token]](),
		"WhoAmI":          reflect.TypeFor[api.WhoAmI](),
		"Role":            reflect.TypeFor[api.Role](),
		"RoleList":        reflect.TypeFor[api.List[api.Role]](),
		"AuditActor":      reflect.TypeFor[api.AuditActor](),
		"AuditRecord":     reflect.TypeFor[api.AuditRecord](),
		"AuditRecordList": reflect.TypeFor[api.List[api.AuditRecord]](),
		"Lease":           reflect.TypeFor[api.Lease](),
		"LeaseSet":        reflect.TypeFor[api.LeaseSet](),
		"VMHASet":         reflect.TypeFor[api.VMHASet](),
		"HARestartRecord": reflect.TypeFor[api.HARestartRecord](),
		"HostFence":       reflect.TypeFor[api.HostFence](),
		"Version":         reflect.TypeFor[api.Version](),
		"ClusterStatus":   reflect.TypeFor[api.ClusterStatus](),
		"ClusterServer":   reflect.TypeFor[api.ClusterServer](),
		// The servers of the control plane.
		"Server":        reflect.TypeFor[api.Server](),
		"ServerList":    reflect.TypeFor[api.List[api.Server]](),
		"ClusterJoin":   reflect.TypeFor[api.ClusterJoin](),
		"ClusterJoined": reflect.TypeFor[api.ClusterJoined](),
		"AgentServers":  reflect.TypeFor[api.AgentServers](),
		// The audit log's state and verification, and alarms.
		"AuditSpan":         reflect.TypeFor[api.AuditSpan](),
		"AuditProblem":      reflect.TypeFor[api.AuditProblem](),
		"AuditVerification": reflect.TypeFor[api.AuditVerification](),
		"AuditStatus":       reflect.TypeFor[api.AuditStatus](),
		"Alarm":             reflect.TypeFor[api.Alarm](),
		// VMs moved from other hypervisors.
		"VMMigration":         reflect.TypeFor[api.VMMigration](),
		"VMMigrationSpec":     reflect.TypeFor[api.VMMigrationSpec](),
		"VMMigrationSource":   reflect.TypeFor[api.VMMigrationSource](),
		"VMMigrationSourceVM": reflect.TypeFor[api.VMMigrationSourceVM](),
		"VMMigrationFile":     reflect.TypeFor[api.VMMigrationFile](),
		"VMMigrationHardware": reflect.TypeFor[api.VMMigrationHardware](),
		"VMMigrationVMPlan":   reflect.TypeFor[api.VMMigrationVMPlan](),
		"VMMigrationDiskPlan": reflect.TypeFor[api.VMMigrationDiskPlan](),
		"VMMigrationNICPlan":  reflect.TypeFor[api.VMMigrationNICPlan](),
		"VMMigrationStatus":   reflect.TypeFor[api.VMMigrationStatus](),
		"VMMigrationVMStatus": reflect.TypeFor[api.VMMigrationVMStatus](),
		"VMMigrationCreate":   reflect.TypeFor[api.VMMigrationCreate](),
		"VMMigrationList":     reflect.TypeFor[api.List[api.VMMigration]](),
		// Live migration and host drain.
		"VMMigrate":       reflect.TypeFor[api.VMMigrate](),
		"Migration":       reflect.TypeFor[api.Migration](),
		"MigrationStatus": reflect.TypeFor[api.MigrationStatus](),
		"HostDrain":       reflect.TypeFor[api.HostDrain](),
		"DrainMove":       reflect.TypeFor[api.DrainMove](),
		"AgentMigration":  reflect.TypeFor[api.AgentMigration](),
		"AlarmList":       reflect.TypeFor[api.List[api.Alarm]](),
		// Networks, subnets, ports, security groups, floating IPs, and the
		// state each host is sent of them.
		"Network":             reflect.TypeFor[api.Network](),
		"NetworkSpec":         reflect.TypeFor[api.NetworkSpec](),
		"NetworkStatus":       reflect.TypeFor[api.NetworkStatus](),
		"NetworkCreate":       reflect.TypeFor[api.NetworkCreate](),
		"NetworkList":         reflect.TypeFor[api.List[api.Network]](),
		"Subnet":              reflect.TypeFor[api.Subnet](),
		"SubnetSpec":          reflect.TypeFor[api.SubnetSpec](),
		"SubnetStatus":        reflect.TypeFor[api.SubnetStatus](),
		"SubnetCreate":        reflect.TypeFor[api.SubnetCreate](),
		"SubnetList":          reflect.TypeFor[api.List[api.Subnet]](),
		"IPRange":             reflect.TypeFor[api.IPRange](),
		"Route":               reflect.TypeFor[api.Route](),
		"Port":                reflect.TypeFor[api.Port](),
		"PortSpec":            reflect.TypeFor[api.PortSpec](),
		"PortStatus":          reflect.TypeFor[api.PortStatus](),
		"PortCreate":          reflect.TypeFor[api.PortCreate](),
		"PortUpdate":          reflect.TypeFor[api.PortUpdate](),
		"PortList":            reflect.TypeFor[api.List[api.Port]](),
		"FixedIP":             reflect.TypeFor[api.FixedIP](),
		"SecurityGroup":       reflect.TypeFor[api.SecurityGroup](),
		"SecurityGroupSpec":   reflect.TypeFor[api.SecurityGroupSpec](),
		"SecurityGroupRule":   reflect.TypeFor[api.SecurityGroupRule](),
		"SecurityGroupCreate": reflect.TypeFor[api.SecurityGroupCreate](),
		"SecurityGroupUpdate": reflect.TypeFor[api.SecurityGroupUpdate](),
		"SecurityGroupRules":  reflect.TypeFor[api.SecurityGroupRules](),
		"SecurityGroupList":   reflect.TypeFor[api.List[api.SecurityGroup]](),
		"FloatingIP":          reflect.TypeFor[api.FloatingIP](),
		"FloatingIPSpec":      reflect.TypeFor[api.FloatingIPSpec](),
		"FloatingIPStatus":    reflect.TypeFor[api.FloatingIPStatus](),
		"FloatingIPCreate":    reflect.TypeFor[api.FloatingIPCreate](),
		"FloatingIPAssociate": reflect.TypeFor[api.FloatingIPAssociate](),
		"FloatingIPList":      reflect.TypeFor[api.List[api.FloatingIP]](),
		"HostNetworkState":    reflect.TypeFor[api.HostNetworkState](),
		"HostNetwork":         reflect.TypeFor[api.HostNetwork](),
		"HostPort":            reflect.TypeFor[api.HostPort](),
		"RemotePort":          reflect.TypeFor[api.RemotePort](),
		"HostSecurityGroup":   reflect.TypeFor[api.HostSecurityGroup](),
		"HostFloatingIP":      reflect.TypeFor[api.HostFloatingIP](),
		"PortReport":          reflect.TypeFor[api.PortReport](),
		"PortReportResult":    reflect.TypeFor[api.PortReportResult](),

		// Storage pools and volumes.
		"Pool":                   reflect.TypeFor[api.Pool](),
		"PoolSpec":               reflect.TypeFor[api.PoolSpec](),
		"PoolStatus":             reflect.TypeFor[api.PoolStatus](),
		"PoolHostStatus":         reflect.TypeFor[api.PoolHostStatus](),
		"PoolCreate":             reflect.TypeFor[api.PoolCreate](),
		"PoolUpdate":             reflect.TypeFor[api.PoolUpdate](),
		"PoolList":               reflect.TypeFor[api.List[api.Pool]](),
		"Volume":                 reflect.TypeFor[api.Volume](),
		"VolumeSpec":             reflect.TypeFor[api.VolumeSpec](),
		"VolumeSource":           reflect.TypeFor[api.VolumeSource](),
		"VolumeLimits":           reflect.TypeFor[api.VolumeLimits](),
		"VolumeStatus":           reflect.TypeFor[api.VolumeStatus](),
		"VolumeCreate":           reflect.TypeFor[api.VolumeCreate](),
		"VolumeAttach":           reflect.TypeFor[api.VolumeAttach](),
		"VolumeGrow":             reflect.TypeFor[api.VolumeGrow](),
		"VolumeSnapshot":         reflect.TypeFor[api.VolumeSnapshot](),
		"VolumeList":             reflect.TypeFor[api.List[api.Volume]](),
		"VolumeAttachment":       reflect.TypeFor[api.VolumeAttachment](),
		"VolumeAttachmentStatus": reflect.TypeFor[api.VolumeAttachmentStatus](),

		// Capacity plans.
		"PlanRequest":     reflect.TypeFor[api.PlanRequest](),
		"PlanOptions":     reflect.TypeFor[api.PlanOptions](),
		"PlanUsage":       reflect.TypeFor[api.PlanUsage](),
		"Plan":            reflect.TypeFor[api.Plan](),
		"PlanHost":        reflect.TypeFor[api.PlanHost](),
		"PlanAssignment":  reflect.TypeFor[api.PlanAssignment](),
		"PlanMove":        reflect.TypeFor[api.PlanMove](),
		"PlanUnplaced":    reflect.TypeFor[api.PlanUnplaced](),
		"PlanSavings":     reflect.TypeFor[api.PlanSavings](),
		"PlanChange":      reflect.TypeFor[api.PlanChange](),
		"PlanHostShape":   reflect.TypeFor[api.PlanHostShape](),
		"WhatIf":          reflect.TypeFor[api.WhatIf](),
		"Forecast":        reflect.TypeFor[api.Forecast](),
		"ClusterForecast": reflect.TypeFor[api.ClusterForecast](),
		"ForecastTrend":   reflect.TypeFor[api.ForecastTrend](),
		// Balancing.
		"Balance":         reflect.TypeFor[api.Balance](),
		"BalanceSettings": reflect.TypeFor[api.BalanceSettings](),
		"BalanceCycle":    reflect.TypeFor[api.BalanceCycle](),
		"BalanceHost":     reflect.TypeFor[api.BalanceHost](),
		"BalanceMove":     reflect.TypeFor[api.BalanceMove](),
		"BalanceLoad":     reflect.TypeFor[api.BalanceLoad](),
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for name, s := range schemas {
		typ, ok := types[name]
		if !ok {
			t.Errorf("schema %s has no wire type in this test", name)
			continue
		}
		props, required := schemaFields(t, doc, s.(map[string]any))
		want := jsonFields(typ)
		sort.Strings(props)
		sort.Strings(want)
		if strings.Join(props, ",") != strings.Join(want, ",") {
			t.Errorf("schema %s has properties\n  %v\nthe Go type %v has\n  %v", name, props, typ, want)
		}
		for _, r := range required {
			if !slices.Contains(props, r) {
				t.Errorf("schema %s requires %q, which it does not have", name, r)
			}
		}
	}
	for name := range types {
		if _, ok := schemas[name]; !ok {
			t.Errorf("no schema %s", name)
		}
	}
}
